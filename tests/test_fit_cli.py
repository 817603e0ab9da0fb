"""`cadbench fit`: the 'does it fit' table from the estimator."""

import json

from cadbench.cli import main
from cadbench.commands.arguments import memory_size


def test_memory_sizes_parse_decimal_and_binary_units():
    assert memory_size("24GB") == 24 * 10**9
    assert memory_size("80GiB") == 80 * 2**30
    assert memory_size("512MiB") == 512 * 2**20
    assert memory_size("1000") == 1000


def test_fit_is_monotone_in_capacity_and_respects_the_context(capsys):
    argv = ["fit", "--backbone", "test_scale", "--methods", "cad", "--gpu-memory", "1.2GB,1.5GB,4GB",
            "--cuda-context", "1GB", "--max-batch", "16", "--precision", "fp32", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    largest = [row["largest_plain_batch"] for row in rows]
    assert largest == sorted(largest) and largest[-1] == 16 and rows[0]["cuda_context_bytes"] == 10**9
    assert main(["fit", "--backbone", "test_scale", "--methods", "cad", "--gpu-memory", "900MB",
                 "--cuda-context", "1GB", "--precision", "fp32", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["largest_plain_batch"] == 0 and row["fits_target"] is None and row["levers"] is None  # none asked
    assert main(["fit", "--backbone", "test_scale", "--methods", "cad", "--gpu-memory", "900MB",
                 "--cuda-context", "1GB", "--precision", "fp32", "--target-batch", "4", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["largest_plain_batch"] == 0 and row["fits_target"] is False and row["levers"] == ""


def test_without_a_target_batch_fit_names_the_largest_plain_batch_and_how_to_ask_for_levers(capsys):
    argv = ["fit", "--backbone", "test_scale", "--methods", "sam_adapter", "--gpu-memory", "0.08GB,1GB",
            "--cuda-context", "0", "--max-batch", "8", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Largest batch with no levers" in out and "8+" in out
    assert "Cheapest levers" not in out and "Add --target-batch B for the cheapest memory levers" in out


def test_fit_bad_input_is_one_line(capsys):
    assert main(["fit", "--gpu-memory", "lots"]) == 2
    assert main(["fit", "--precision", "fp8"]) == 2
    assert main(["fit", "--target-batch", "0"]) == 2
    assert main(["fit", "--target-batch", "80", "--max-batch", "64"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and "--gpu-memory: memory sizes look like" in err[0] and "unknown precision 'fp8'" in err[1]
    assert "--target-batch must be between 1 and --max-batch (64), got 0" in err[2] and "got 80" in err[3]


def test_fit_names_the_cheapest_levers_per_card_and_shows_plain_progress_off_a_terminal(capsys):
    argv = ["fit", "--backbone", "test_scale", "--methods", "sam_adapter,decoder_only", "--gpu-memory",
            "0.08GB,1GB", "--cuda-context", "0", "--max-batch", "8", "--target-batch", "4", "--precision", "fp32",
            "--jobs", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    first, second = captured.err.splitlines()
    assert first == "fit [1/2] sam_adapter on test_scale"  # nothing finished yet: no time left to say
    assert second.startswith("fit [2/2] decoder_only on test_scale; ETA about ")
    out = captured.out
    assert "Largest batch with no levers" in out and "Cheapest levers that reach an effective batch of 4" in out
    assert "micro-batch" in out and "8+" in out  # the small card needs accumulation; the large fits the max


def test_fit_takes_allocator_settings_and_refuses_what_it_cannot_simulate(capsys):
    argv = ["fit", "--backbone", "test_scale", "--methods", "cad", "--gpu-memory", "1.2GB", "--max-batch", "4"]
    assert main([*argv, "--alloc-conf", "expandable_segments:True"]) == 0
    assert "allocator settings expandable_segments:True" in capsys.readouterr().out
    assert main([*argv, "--alloc-conf", "backend:cudaMallocAsync"]) == 2
    assert main([*argv, "--alloc-conf", "max_split_size_mb:1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "backend:cudaMallocAsync: the caching-allocator simulation does not model it" in err[0]
    assert err[1].startswith("cadbench: error: --alloc-conf: allocator setting max_split_size_mb") or \
        "--alloc-conf: allocator setting max_split_size_mb" in err[1]


def test_pairs_searched_by_several_processes_give_the_same_answers_in_the_same_order(capsys):
    argv = ["fit", "--backbone", "test_scale", "--methods", "sam_adapter,cad,lora", "--gpu-memory", "0.08GB,1GB",
            "--cuda-context", "0", "--max-batch", "4", "--json"]
    assert main([*argv, "--jobs", "1"]) == 0
    alone = capsys.readouterr()
    assert main([*argv, "--jobs", "2"]) == 0
    together = capsys.readouterr()
    assert json.loads(together.out) == json.loads(alone.out) and len(json.loads(alone.out)) == 6
    # progress as each pair finishes, in whatever order they finish
    lines = together.err.splitlines()
    assert [line.split("] ")[0] for line in lines] == ["fit [1/3", "fit [2/3", "fit [3/3"]
    assert sorted(line.split("] ")[1].split("; ")[0] for line in lines) == [
        "cad on test_scale", "lora on test_scale", "sam_adapter on test_scale"]
    assert ["; ETA about " in line for line in lines] == [False, True, False]  # the pace from the first finished


def test_fit_progress_says_the_time_left_from_the_mean_time_of_the_searches_finished(capsys):
    from cadbench.commands.fit import _progress

    now = [100.0]
    progress = _progress(4, enabled=True, clock=lambda: now[0])
    now[0] += 50  # imports before the first search: no search's time
    with progress as step:
        for finished, (label, seconds) in enumerate((("a", 30), ("b", 30), ("c", 60), ("d", 0))):
            step(label, finished)
            now[0] += seconds
    assert capsys.readouterr().err.splitlines() == [
        "fit [1/4] a", "fit [2/4] b; ETA about 1 min 30 s", "fit [3/4] c; ETA about 1 min 00 s",
        "fit [4/4] d; ETA about 40 s"]
    now[0] = 0.0  # several processes: called as each search finishes; the pace counts from the first finished
    with _progress(3, enabled=True, clock=lambda: now[0]) as step:
        for finished, (label, seconds) in enumerate((("a", 20), ("b", 20), ("c", 0)), start=1):
            now[0] += seconds
            step(label, finished)
    assert capsys.readouterr().err.splitlines() == ["fit [1/3] a", "fit [2/3] b; ETA about 20 s", "fit [3/3] c"]


def test_jobs_below_one_is_refused_in_one_line(capsys):
    assert main(["fit", "--backbone", "test_scale", "--jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "cadbench: error: --jobs must be at least 1, got 0"
