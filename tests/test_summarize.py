"""`python -m launch.summarize` on small run folders written by the runner's own writers
(launch/report.py): the aggregate table, P(X > Y), the performance profile PNG, curves against
the step columns, and the one-line errors."""
import numpy as np
import pytest
import scipy.stats

from launch import report, summarize

SCORES = {  # (algo, task) -> final normalized score per seed
    ("iql", "a-v0"): [60.0, 70.0, 80.0, 90.0, 100.0],
    ("iql", "b-v0"): [20.0, 30.0, 40.0, 50.0, 65.0],
    ("bc", "a-v0"): [55.0, 65.0, 70.0, 75.0, 85.0],
    ("bc", "b-v0"): [10.0, 20.0, 30.0, 35.0, 40.0],
}


def write_run(folder, algo, task, finals, *, step_columns=True, updates=3, members=None):
    """A finished run as the runner leaves it: metrics.csv, eval.csv and summary.json."""
    folder.mkdir()
    seeds = len(finals)
    log = report.MetricLog(str(folder), tensorboard=False)
    for step in range(1, updates + 1):
        metrics = {"loss": np.full(seeds, 1.0 / step)}
        if step_columns:
            metrics.update(grad_steps=np.full(seeds, 1000.0 * step),
                           wall_time=np.full(seeds, 2.5 * step))
        log.write("metrics", step, metrics)
        log.write("eval", step, {"normalized_score": np.asarray(finals) * step / updates})
    config = {"algo": algo, "env": task, "num_seeds": seeds // len(members or [{}]), "seed": 0,
              "config": {"num_updates": updates}}
    final = {"loss": np.full(seeds, 1.0 / updates),
             "eval/normalized_score": np.asarray(finals, dtype=float)}
    extra = {"members": members} if members else {}
    report.write_summary(str(folder / "summary.json"), config, final, extra)
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    return [write_run(tmp_path / f"{algo}-{task}", algo, task, finals)
            for (algo, task), finals in SCORES.items()]


def table_cells(lines, first_column):
    row = next(line for line in lines if line.startswith(f"| {first_column} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def parse_cell(text):
    point, rest = text.split(" [")
    lo, hi = rest.rstrip("]").split(", ")
    return float(point), float(lo), float(hi)


def test_aggregates_improvement_and_profile_from_run_folders(runs, tmp_path, capsys):
    png = tmp_path / "profile.png"
    assert summarize.main(runs + ["--aggregate=eval/normalized_score", "--reps=2000",
                                  "--improvement=iql,bc", f"--profile={png}",
                                  "--taus=0:100:5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("| algo | tasks | runs | IQM | mean | median | optimality gap "
                        "(gamma=100) |")
    for algo in ("iql", "bc"):
        tasks = [np.array(v) for (a, _), v in SCORES.items() if a == algo]
        cells = table_cells(lines, algo)
        assert cells[1:3] == ["2", "10"]
        iqm, lo, hi = parse_cell(cells[3])
        assert iqm == pytest.approx(scipy.stats.trim_mean(np.concatenate(tasks), 0.25), abs=0.01)
        assert lo < iqm < hi
        task_means = [t.mean() for t in tasks]
        assert parse_cell(cells[4])[0] == pytest.approx(np.mean(task_means), abs=0.01)
        assert parse_cell(cells[5])[0] == pytest.approx(np.median(task_means), abs=0.01)
        gap = 100 - np.mean([np.minimum(t, 100).mean() for t in tasks])
        assert parse_cell(cells[6])[0] == pytest.approx(gap, abs=0.01)
    # P(iql > bc): pairwise wins (ties 1/2) per task, averaged over the two tasks
    wins = [np.mean([1.0 if x > y else 0.5 if x == y else 0.0
                     for x in SCORES["iql", t] for y in SCORES["bc", t]]) for t in ("a-v0", "b-v0")]
    cells = table_cells(lines, "iql > bc")
    value, lo, hi = parse_cell(cells[1])
    assert value == pytest.approx(np.mean(wins), abs=0.005) and lo <= value <= hi
    assert cells[2] == "2"
    # profile rows at tau = 0, 25, 50, 75, 100: fraction of runs strictly above, task-averaged
    for tau in (0.0, 25.0, 50.0, 75.0, 100.0):
        cells = table_cells(lines, f"{tau:.4g}")
        for algo, text in zip(("iql", "bc"), cells[1:]):
            expected = np.mean([np.mean(np.array(SCORES[algo, t]) > tau) for t in ("a-v0", "b-v0")])
            assert parse_cell(text)[0] == pytest.approx(expected, abs=0.005)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_x_axis_columns_in_the_table_and_curves(runs, tmp_path, capsys):
    png = tmp_path / "curves.png"
    assert summarize.main(runs + ["--x=grad_steps", f"--curves={png}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| algo | env | seeds | grad_steps | eval/normalized_score |"
    assert table_cells(lines, "iql")[3] == "3000"  # 3 updates of 1000 gradient steps
    assert lines[-1] == ("learning curves of eval/normalized_score against grad_steps "
                         f"written to {png}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    xs, values = summarize._curve(runs[0], "eval/normalized_score", "wall_time")
    np.testing.assert_allclose(xs, [2.5, 5.0, 7.5])  # eval.csv lacks it: metrics.csv's
    np.testing.assert_allclose(values[-1], SCORES["iql", "a-v0"])


def test_x_values_come_from_the_log_of_the_metric_when_it_carries_them(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    log = report.MetricLog(str(run), tensorboard=False)
    for step in (2, 4):  # evaluations end a few seconds after their chunk's training row
        log.write("metrics", step, {"loss": np.ones(2), "wall_time": np.full(2, 10.0 * step)})
        log.write("eval", step, {"return": np.array([step, step + 1.0]),
                                 "wall_time": np.full(2, 10.0 * step + 3)})
    xs, values = summarize._curve(str(run), "eval/return", "wall_time")
    np.testing.assert_allclose(xs, [23.0, 43.0])
    np.testing.assert_allclose(values, [[2.0, 3.0], [4.0, 5.0]])
    xs, _ = summarize._curve(str(run), "loss", "wall_time")
    np.testing.assert_allclose(xs, [20.0, 40.0])


def test_runs_without_step_columns_work_and_a_missing_x_is_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "old", "bc", "a-v0", [1.0, 2.0], step_columns=False)
    png = tmp_path / "c.png"
    assert summarize.main([run, f"--curves={png}"]) == 0
    assert "| bc | a-v0 | 2 | 3 |" in capsys.readouterr().out
    assert summarize.main([run, "--x=env_steps", f"--curves={png}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"launch.summarize: --x=env_steps: {run}/metrics.csv has no env_steps column "
                   "(x-axes this run offers: update)")


def test_sweep_members_are_separate_algorithms(tmp_path, capsys):
    members = [{"expectile": 0.5}, {"expectile": 0.9}]
    run = write_run(tmp_path / "sweep", "iql", "a-v0", [1.0, 2.0, 3.0, 7.0, 8.0, 9.0],
                    members=members)
    assert summarize.main([run, "--aggregate=eval/normalized_score", "--reps=100",
                           "--improvement=iql[expectile=0.9],iql[expectile=0.5]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert parse_cell(table_cells(lines, "iql[expectile=0.5]")[4])[0] == 2.0
    assert parse_cell(table_cells(lines, "iql[expectile=0.9]")[4])[0] == 8.0
    assert parse_cell(table_cells(lines, "iql[expectile=0.9] > iql[expectile=0.5]")[1]) == (
        1.0, 1.0, 1.0)


@pytest.mark.parametrize("flags, message", [
    (["--profile=p.png"], "--profile needs --aggregate=METRIC (the metric it compares)"),
    (["--aggregate=eval/return"], "--aggregate=eval/return: {run}/summary.json has no per-seed "
                                  "values of it (its metrics: eval/normalized_score, loss)"),
    (["--aggregate=eval/normalized_score", "--improvement=iql,sac"],
     "--improvement=iql,sac: no runs of sac (algorithms given: iql)"),
    (["--aggregate=eval/normalized_score", "--improvement=iql"],
     "--improvement=iql: expected two algorithms as X,Y"),
    (["--aggregate=eval/normalized_score", "--profile=p.png", "--taus=0:1"],
     "--taus=0:1: expected LO:HI:COUNT, e.g. 0:100:101"),
    (["--reps=0"], "--reps=0: must be a positive number of resamples"),
    (["--pivot=eval/return", "--curves=c.png"],
     "--curves: no run logged eval/return (name the metric with --aggregate=METRIC or "
     "--pivot=METRIC)"),
])
def test_bad_flags_stop_with_one_line_before_any_output(tmp_path, capsys, flags, message):
    run = write_run(tmp_path / "r", "iql", "a-v0", [1.0, 2.0])
    assert summarize.main([run] + flags) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "launch.summarize: " + message.format(run=run)


def test_non_finite_scores_are_refused(tmp_path, capsys):
    run = write_run(tmp_path / "r", "iql", "a-v0", [1.0, float("nan")])
    assert summarize.main([run, "--aggregate=eval/normalized_score"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"launch.summarize: --aggregate=eval/normalized_score: {run}/summary.json holds "
        "non-finite values of it: [1.0, nan]")

