"""Our torch training step side by side with the reference's (github.com/sapientinc/HRM), on the same synthetic
batches as `hrm bench` (shared/app/bench.py). The reference is read at run time from a checkout of it (`--reference
DIR`); nothing of it is copied here. Its own `pretrain.init_train_state` builds its model and optimizers and its own
`pretrain.train_batch` runs each step (`DISABLE_COMPILE` set for eager, unset for its torch.compile).

Each contender runs in its own process, built and warmed up (compiled) once; then rounds alternate which goes first,
each round a few timed steps of each, so a load that changes over time hits both alike. Per round the ratio is the
reference's median step time over ours (ours / reference in steps/s); the table gives the median [min, max] of the
rounds, per shape (`tiny` batch 64, `sudoku` 27.3M batch 8 on the CPU) and mode (both eager, both compiled). A last
section times the AdamATan2 update alone at the sudoku shape: ours (eager and compiled) against the same formula
applied per parameter with foreach, with the page faults of each.

Where flash-attn (flash_attn_interface or flash_attn) or the adam-atan2 extension is not installed, the reference
gets scaled_dot_product_attention and the same AdamATan2 formula in torch (FOREACH below) in their place; where the
modules its pretrain.py imports for logging and configuration (wandb, hydra, omegaconf, coolname) are missing, empty
ones stand in (the training step never calls them). The JSON and the table say which were replaced.

    .venv/bin/python scripts/bench_reference.py --reference ~/HRM [--device cuda] [--rounds 5] [--shape tiny]
        [--mode eager] [--json FILE] [--note TEXT]

For one pinned core: `OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python scripts/bench_reference.py --reference DIR`.
"""

import argparse
import importlib.util
import inspect
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hrm_shared.app.bench import Spec, bench_config, synthetic_batch  # noqa: E402  (after the path set-up)
from hrm_shared.core.act import draw_exploration  # noqa: E402
from hrm_shared.core.atomic import write_file  # noqa: E402
from hrm_shared.core.errors import HRMError  # noqa: E402

# The files of a reference checkout that the benchmark reads.
REFERENCE_FILES = ("pretrain.py", "models/hrm/hrm_act_v1.py", "models/layers.py", "models/losses.py",
                   "models/sparse_embedding.py", "config/arch/hrm_v1.yaml")
BATCH = {"cpu": {"tiny": 64, "sudoku": 8}, "cuda": {"tiny": 768, "sudoku": 768}}
STEPS = {"cpu": {"tiny": 3, "sudoku": 1}, "cuda": {"tiny": 10, "sudoku": 10}}  # timed steps per contender per round
WARMUP = {"eager": 1, "compiled": 3}  # steps before timing: the compilations (first call, then the carried state)
ARCH_FIELDS = ("hidden_size", "num_heads", "expansion", "H_layers", "L_layers", "H_cycles", "L_cycles",
               "halt_max_steps", "halt_exploration_prob", "puzzle_emb_ndim", "pos_encodings", "forward_dtype",
               "rope_theta", "rms_norm_eps")
UPDATE_REPEATS = 5  # timed updates per contender per round


def check_reference(path: Path) -> Path:
    """`path` resolved, or an HRMError naming the first file of REFERENCE_FILES it lacks."""
    path = Path(path).expanduser().resolve()
    for name in REFERENCE_FILES:
        if not (path / name).is_file():
            raise HRMError(f"{path} is not a checkout of github.com/sapientinc/HRM: it has no {name} "
                           f"(git clone https://github.com/sapientinc/HRM and pass its folder to --reference)")
    return path


class ForeachAdamATan2(torch.optim.Optimizer):
    """The AdamATan2 formula (hrm_torch/optim.py) applied per parameter with foreach operations, as a torch optimizer
    (the reference's interface: `lr` set in its param groups before each step). There is no foreach atan2: that
    one operation runs parameter by parameter."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.1) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        """One update of every parameter with a .grad."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
            grads, ms, vs = [p.grad for p in params], [s["m"] for s in states], [s["v"] for s in states]
            t, lr, (b1, b2) = states[0]["step"], group["lr"], group["betas"]
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            torch._foreach_lerp_(ms, grads, 1 - b1)
            torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1 - b2)
            denoms = torch._foreach_sqrt(vs)
            torch._foreach_div_(denoms, math.sqrt(1 - b2 ** t))
            torch._foreach_add_(params, [torch.atan2(m, d) for m, d in zip(ms, denoms)], alpha=-lr / (1 - b1 ** t))


def _sdpa_flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """flash_attn_func's interface (q, k, v [B, T, heads, D] -> [B, T, heads, D], contiguous) on
    scaled_dot_product_attention, as our attention calls it."""
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           is_causal=causal)
    return out.transpose(1, 2).contiguous()  # [B, heads, T, D] -> [B, T, heads, D]


def _stand_ins() -> list[str]:
    """Put modules in sys.modules for what the reference imports and is not installed -> notes saying which."""
    notes = []
    if importlib.util.find_spec("flash_attn_interface") is None and importlib.util.find_spec("flash_attn") is None:
        sys.modules["flash_attn_interface"] = types.SimpleNamespace(flash_attn_func=_sdpa_flash_attn_func)
        notes.append("flash-attn is not installed: the reference's attention runs on scaled_dot_product_attention")
    if importlib.util.find_spec("adam_atan2") is None:
        sys.modules["adam_atan2"] = types.SimpleNamespace(AdamATan2=ForeachAdamATan2)
        notes.append("the adam-atan2 extension is not installed: the reference's AdamATan2 is the same formula in "
                     "torch, per parameter with foreach")
    empty = {"wandb": {}, "coolname": {}, "hydra": {"main": lambda **_: lambda f: f},
             "omegaconf": {"DictConfig": dict}}
    missing = [name for name in empty if importlib.util.find_spec(name) is None]
    for name in missing:
        sys.modules[name] = types.SimpleNamespace(**empty[name])
    if missing:
        notes.append(f"not installed, empty modules stand in (logging and configuration; the step never calls "
                     f"them): {', '.join(missing)}")
    return notes


class Ours:
    """Our torch Trainer on `hrm bench`'s synthetic batches."""

    def __init__(self, shape: str, device: str, batch: int, compiled: bool) -> None:
        from hrm_torch.train import Trainer, new_model
        spec = Spec("torch", shape, device, batch, compile=compiled)
        self.config, self.train, self.notes = bench_config(spec, device == "cpu")
        self.rng = np.random.default_rng(0)
        self.batches = [synthetic_batch(self.rng, self.config, batch) for _ in range(2)]
        self.trainer = Trainer(new_model(self.config, 0, device), self.train, compiled)
        self.count = 0

    def step(self) -> None:
        config, train = self.config, self.train
        draws = draw_exploration(self.rng, train.global_batch_size, config.halt_max_steps,
                                 config.halt_exploration_prob)
        self.trainer.step(self.batches[self.count % 2], draws, train.lr, train.puzzle_emb_lr)
        self.count += 1


class Reference:
    """The reference's init_train_state and train_batch from the checkout at `path`, with our config of `shape`."""

    def __init__(self, path: Path, shape: str, device: str, batch: int, compiled: bool) -> None:
        import yaml
        self.notes = _stand_ins()
        sys.path.insert(0, str(path))
        if compiled:
            os.environ.pop("DISABLE_COMPILE", None)
        else:
            os.environ["DISABLE_COMPILE"] = "1"
        import pretrain
        source = inspect.getsource(pretrain.train_batch) + inspect.getsource(pretrain.create_model)
        if device == "cpu" and (".cuda()" in source or 'torch.device("cuda")' in source):
            raise HRMError(f"{path}/pretrain.py runs its step on CUDA only; run this on an NVIDIA GPU "
                           f"(bash scripts/gpu_check.sh --reference {path})")
        config, train, notes = bench_config(Spec("torch", shape, device, batch), device == "cpu")
        self.notes += notes
        arch_file = yaml.safe_load((path / "config/arch/hrm_v1.yaml").read_text())
        arch = {k: getattr(config, k) for k in ARCH_FIELDS}
        arch.update(name=arch_file["name"], loss={"name": arch_file["loss"]["name"], "loss_type": config.loss_type})
        self.config = pretrain.PretrainConfig(
            arch=arch, data_path="synthetic", global_batch_size=batch, epochs=10 ** 6, lr=train.lr,
            lr_min_ratio=train.lr_min_ratio, lr_warmup_steps=0, weight_decay=train.weight_decay,
            beta1=train.beta1, beta2=train.beta2, puzzle_emb_lr=train.puzzle_emb_lr,
            puzzle_emb_weight_decay=train.puzzle_emb_weight_decay)
        metadata = pretrain.PuzzleDatasetMetadata(
            pad_id=0, ignore_label_id=-100, blank_identifier_id=0, vocab_size=config.vocab_size,
            seq_len=config.seq_len, num_puzzle_identifiers=config.num_puzzle_identifiers, total_groups=1,
            mean_puzzle_examples=batch, sets=["all"])
        torch.random.manual_seed(0)
        self.state = pretrain.init_train_state(self.config, metadata, world_size=1)
        rng = np.random.default_rng(0)
        self.batches = [{k: torch.from_numpy(v) for k, v in synthetic_batch(rng, config, batch).items()}
                        for _ in range(2)]
        self.train_batch, self.batch, self.count = pretrain.train_batch, batch, 0

    def step(self) -> None:
        self.train_batch(self.config, self.state, self.batches[self.count % 2], self.batch, rank=0, world_size=1)
        self.count += 1


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(step, device: str) -> float:
    """Seconds of one call of `step`, the device's queued work included."""
    _synchronize(device)
    start = time.perf_counter()
    step()
    _synchronize(device)
    return time.perf_counter() - start


def _update_contenders(device: str) -> dict:
    """name -> one AdamATan2 update at the sudoku shape: ours eager (flat gradient + update), ours compiled, and
    FOREACH on a copy of the same model; each with its own gradients, set once."""
    from hrm_torch.optim import AdamATan2
    from hrm_torch.train import new_model
    config, train, _ = bench_config(Spec("torch", "sudoku", device), device == "cpu")
    contenders = {}
    for name in ("ours eager", "ours compiled", "foreach per parameter"):
        model = new_model(config, 0, device)
        for p in model.parameters():
            p.grad = torch.randn_like(p) if p.requires_grad else None
        if name == "foreach per parameter":
            optimizer = ForeachAdamATan2([p for p in model.parameters() if p.requires_grad], train.lr,
                                         (train.beta1, train.beta2), train.weight_decay)
            contenders[name] = optimizer.step
        else:
            adam = AdamATan2(model, (train.beta1, train.beta2), train.weight_decay)
            if name == "ours compiled":
                adam.compile()
            contenders[name] = lambda adam=adam: adam.update(adam.flat_gradient(), train.lr)
    contenders["parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return contenders


def _worker(kind: str, spec: dict) -> None:
    """A contender process: build and warm up, print {"ready", "notes"}, then for each line N on stdin run N timed
    steps and print their seconds (the update worker: N timed updates per contender, with page faults)."""
    torch.manual_seed(0)
    device = spec["device"]
    if kind == "update":
        contenders = _update_contenders(device)
        parameters = contenders.pop("parameters")
        for update in contenders.values():
            for _ in range(2):
                update()
        print(json.dumps({"ready": True, "notes": [], "parameters": parameters}), flush=True)
        for line in sys.stdin:
            result = {}
            for name, update in contenders.items():
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                seconds = [_timed(update, device) for _ in range(int(line))]
                result[name] = {"seconds": seconds,
                                "minor_faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
                                / int(line)}
            print(json.dumps(result), flush=True)
        return
    compiled = spec["mode"] == "compiled"
    if kind == "ours":
        contender = Ours(spec["shape"], device, spec["batch"], compiled)
    else:
        contender = Reference(Path(spec["reference"]), spec["shape"], device, spec["batch"], compiled)
    for _ in range(WARMUP[spec["mode"]]):
        _timed(contender.step, device)
    print(json.dumps({"ready": True, "notes": contender.notes}), flush=True)
    for line in sys.stdin:
        print(json.dumps([_timed(contender.step, device) for _ in range(int(line))]), flush=True)


class Process:
    """A worker process of this script, driven line by line."""

    def __init__(self, kind: str, spec: dict) -> None:
        self.kind = kind
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", kind, json.dumps(spec)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise HRMError(f"the {self.kind} benchmark process failed (exit status {self.process.returncode}; its "
                           f"error is printed above)")
        return json.loads(line)

    def run(self, count: int):
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def compare(reference: Path, shape: str, mode: str, device: str, rounds: int, log) -> dict:
    """Alternating rounds of our step and the reference's -> the section of the JSON for (shape, mode)."""
    spec = {"reference": str(reference), "shape": shape, "mode": mode, "device": device,
            "batch": BATCH[device][shape]}
    steps = STEPS[device][shape]
    log(f"{shape} {mode}: building and warming up ours, then the reference")
    workers = {"ours": Process("ours", spec), "reference": Process("reference", spec)}
    times: dict[str, list[list[float]]] = {"ours": [], "reference": []}
    try:
        for r in range(rounds):
            order = ("ours", "reference") if r % 2 == 0 else ("reference", "ours")
            for name in order:
                times[name].append(workers[name].run(steps))
            log(f"  round {r + 1}: ours {statistics.median(times['ours'][-1]):.3f} s, reference "
                f"{statistics.median(times['reference'][-1]):.3f} s a step")
    finally:
        for worker in workers.values():
            worker.close()
    ratios = [statistics.median(b) / statistics.median(a) for a, b in zip(times["ours"], times["reference"])]
    return {"shape": shape, "mode": mode, "batch": spec["batch"], "steps_per_round": steps,
            "ours_step_seconds": times["ours"], "reference_step_seconds": times["reference"],
            "ratio": _spread(ratios), "ratios": ratios, "notes": workers["reference"].ready["notes"]}


def compare_updates(device: str, rounds: int, log) -> dict:
    """Alternating rounds of the three AdamATan2 updates at the sudoku shape -> the update section of the JSON."""
    log("AdamATan2 update at the sudoku shape: ours eager, ours compiled, foreach per parameter")
    worker = Process("update", {"device": device})
    results = []
    try:
        for _ in range(rounds):
            results.append(worker.run(UPDATE_REPEATS))
    finally:
        worker.close()
    names = list(results[0])
    seconds = {name: [statistics.median(r[name]["seconds"]) for r in results] for name in names}
    faults = {name: statistics.median(r[name]["minor_faults"] for r in results) for name in names}
    base = seconds["foreach per parameter"]
    return {"parameters": worker.ready["parameters"], "seconds": {n: _spread(s) for n, s in seconds.items()},
            "minor_faults_per_update": faults,
            "time_over_foreach": {n: _spread([a / b for a, b in zip(s, base)]) for n, s in seconds.items()}}


def _ratio(spread: dict) -> str:
    return f"{spread['median']:.3f} [{spread['min']:.3f}, {spread['max']:.3f}]"


def format_table(result: dict) -> str:
    """The result as text: per shape and mode the ratio, then the update times."""
    lines = ["| shape | mode | ours / reference, training steps/s (median [min, max] of rounds) | ours s/step | "
             "reference s/step |", "|---|---|---|---|---|"]
    for c in result["comparisons"]:
        ours = statistics.median(statistics.median(r) for r in c["ours_step_seconds"])
        ref = statistics.median(statistics.median(r) for r in c["reference_step_seconds"])
        lines.append(f"| `{c['shape']}`, batch {c['batch']} | {c['mode']} | {_ratio(c['ratio'])} | {ours:.3f} | "
                     f"{ref:.3f} |")
    notes = sorted({n for c in result["comparisons"] for n in c["notes"]})
    update = result.get("update")
    if update:
        lines += ["", f"AdamATan2 update at the sudoku shape ({update['parameters'] / 1e6:.1f}M parameters):", "",
                  "| update | ms (median [min, max] of rounds) | time / foreach per parameter | minor page faults |",
                  "|---|---|---|---|"]
        for name, spread in update["seconds"].items():
            ms = {k: v * 1e3 for k, v in spread.items()}
            lines.append(f"| {name} | {ms['median']:.1f} [{ms['min']:.1f}, {ms['max']:.1f}] | "
                         f"{_ratio(update['time_over_foreach'][name])} | "
                         f"{update['minor_faults_per_update'][name]:,.0f} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes + result["machine"]["notes"]])


def main(argv: list[str] | None = None) -> dict:
    """Parse the options, run the comparisons and the update timing, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of github.com/sapientinc/HRM")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", action="append", choices=("tiny", "sudoku"), help="default: both")
    parser.add_argument("--mode", action="append", choices=("eager", "compiled"), help="default: both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-update", action="store_true", help="skip the timing of the update alone")
    parser.add_argument("--json", type=Path, help="default: scripts/results/bench_reference_<device>.json")
    parser.add_argument("--note", action="append", default=[], help="a note for the JSON (e.g. the machine's load)")
    args = parser.parse_args(argv)
    reference = check_reference(args.reference)
    device = args.device.split(":")[0]
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "cpus_allowed": len(os.sched_getaffinity(0)),
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "load_average_at_start": list(os.getloadavg()), "notes": args.note}

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    out = args.json or ROOT / "scripts" / "results" / f"bench_reference_{device}.json"
    command = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    if device == "cpu" and machine["cpus_allowed"] < (os.cpu_count() or 1):
        command += ["taskset", "-c", ",".join(map(str, sorted(os.sched_getaffinity(0))))]
    command += ["python", "scripts/bench_reference.py", *(sys.argv[1:] if argv is None else argv)]
    result = {"machine": machine, "command": shlex.join(command), "reference": str(reference), "comparisons": []}
    for shape in args.shape or ("tiny", "sudoku"):
        for mode in args.mode or ("eager", "compiled"):
            result["comparisons"].append(compare(reference, shape, mode, device, args.rounds, log))
            write_file(out, json.dumps(result, indent=2) + "\n")  # each section as it ends: a long run keeps them
    if not args.no_update:
        result["update"] = compare_updates(device, args.rounds, log)
    machine["load_average_at_end"] = list(os.getloadavg())
    write_file(out, json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], json.loads(sys.argv[3]))
    else:
        try:
            main()
        except HRMError as e:
            sys.exit(f"error: {e}")
