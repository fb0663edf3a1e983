"""Trainable diffusion and flow models, one module per algorithm name of `launch.run --algo`.

    edm            EDM preconditioning and loss (Karras et al. 2022, Table 1 "ours", Eq. 2)
    vp             VP preconditioning, denoising score matching on the VP SDE (Song et al. 2021)
    ve             VE preconditioning, denoising score matching on the VE SDE (Song et al. 2021)
    ddpm           discrete DDPM epsilon prediction (Ho et al. 2020, Eq. 14)
    flow_matching  conditional flow matching on the linear path (Lipman et al. 2023; Liu et al.
                   2023)

Every model is a raw network F (`diffusion.networks`) wrapped into ONE denoiser view
D(x; sigma) = c_skip x + c_out F(c_in x; c_noise); only the coefficients and the loss differ,
so every sampler of `diffusion.samplers` serves every model. A module holds its default
configuration, its preconditioning and its loss as a `diffusion.protocol.Model`; the protocol
functions come from `protocol.bind` (training: `diffusion.training`; sampling:
`diffusion.sampling`; after-training report: `diffusion.report`; data: `diffusion.data`).
"""
