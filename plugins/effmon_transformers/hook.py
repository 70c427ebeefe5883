"""The import hook and the Trainer callback. Nothing here imports transformers before the user does."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import time
from typing import Any

TARGET = "transformers.trainer"
PATCHED = "_effmon_patched"  # marks a Trainer class this hook already wraps


class _TrainerFinder(importlib.abc.MetaPathFinder):
    """Lets ``transformers.trainer`` load as usual, then patches ``Trainer.__init__``."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        original = spec.loader.exec_module  # type: ignore[union-attr]

        def exec_module(module: Any) -> None:
            original(module)
            patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[union-attr,method-assign]
        return spec


def install() -> None:
    if TARGET in sys.modules:
        patch(sys.modules[TARGET])
    elif not any(isinstance(f, _TrainerFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TrainerFinder())


def patch(module: Any) -> None:
    trainer_cls = getattr(module, "Trainer", None)
    if trainer_cls is None or getattr(trainer_cls, PATCHED, False):
        return
    original_init = trainer_cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        try:
            _enable_token_count(self.args)
            self.add_callback(make_callback(self))
        except Exception as exc:  # never break training
            sys.stderr.write(f"effmon: could not instrument this Trainer ({exc})\n")

    trainer_cls.__init__ = __init__
    setattr(trainer_cls, PATCHED, True)


def _enable_token_count(args: Any) -> None:
    """Use the Trainer's own input-token count rather than guessing tokens from shapes."""
    current = getattr(args, "include_num_input_tokens_seen", False)
    if current in (False, None, "no"):
        # transformers 5 takes "no" / "all" / "non_padding" (a bool is converted only at construction)
        value: Any = "all" if isinstance(current, str) else True
        try:
            args.include_num_input_tokens_seen = value
        except Exception:
            object.__setattr__(args, "include_num_input_tokens_seen", value)


def describe_model(model: Any) -> dict[str, Any]:
    """Parameter counts and the PEFT method (LoRA, RSLoRA, DoRA, PiSSA ...) with rank and alpha."""
    info: dict[str, Any] = {"source": "transformers.Trainer"}
    if model is None:
        return info
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    info.update(params=total, trainable_params=trainable, type=type(model).__name__)
    if hasattr(model, "get_nb_trainable_parameters"):  # PEFT's own count (e.g. quantised weights)
        try:
            trainable, total = model.get_nb_trainable_parameters()
            info.update(params=int(total), trainable_params=int(trainable))
        except Exception:
            pass
    config = getattr(model, "peft_config", None)
    if isinstance(config, dict) and config:
        cfg = next(iter(config.values()))
        method = str(getattr(cfg, "peft_type", "peft")).split(".")[-1].lower()
        if method == "lora":
            if getattr(cfg, "use_dora", False):
                method = "dora"
            elif str(getattr(cfg, "init_lora_weights", "")).startswith("pissa"):
                method = "pissa"
            elif getattr(cfg, "use_rslora", False):
                method = "rslora"
        info["peft"] = {
            "method": method,
            "r": getattr(cfg, "r", None),
            "alpha": getattr(cfg, "lora_alpha", None),
            "target_modules": sorted(getattr(cfg, "target_modules", None) or []),
        }
    base = getattr(model, "config", None)
    if base is not None:
        info["context_length"] = getattr(base, "max_position_embeddings", None)
        info["model_type"] = getattr(base, "model_type", None)
    return info


class CommTimer:
    """Time in DDP gradient all-reduce, per step: a comm hook doing what DDP's default one does
    (average the bucket over ranks) and timing each bucket from launch to completion."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.installed = False
        self.failed = False

    def install(self, wrapped: Any) -> None:
        try:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel
        except ImportError:
            return
        if self.installed or not isinstance(wrapped, DistributedDataParallel) or not dist.is_initialized():
            return

        def timed_allreduce(state: Any, bucket: Any) -> Any:
            t0 = time.perf_counter()
            tensor = bucket.buffer().div_(dist.get_world_size())
            fut = dist.all_reduce(tensor, async_op=True).get_future()

            def done(f: Any) -> Any:
                self.seconds += time.perf_counter() - t0
                return f.value()[0]

            return fut.then(done)

        timed_allreduce.__annotations__ = {}  # DDP checks annotations; string ones (postponed) fail its check
        wrapped.register_comm_hook(None, timed_allreduce)
        self.installed = True

    def take(self) -> float | None:
        if not self.installed:
            return None
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def make_callback(trainer: Any = None) -> Any:
    from transformers import TrainerCallback

    import effmon.track as et

    comm = CommTimer()

    class EffmonCallback(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.t_start = 0.0
            self.last_end: float | None = None
            self.tokens_seen = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self.tokens_seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            info = describe_model(model)
            info["world_size"] = getattr(args, "world_size", 1)
            et.model_info(**info)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if trainer is not None and not comm.installed and not comm.failed:
                # DDP wraps the model once training has started: hook it before the first backward pass
                try:
                    comm.install(getattr(trainer, "model_wrapped", None))
                except Exception as exc:
                    comm.failed = True
                    sys.stderr.write(f"effmon: communication time is off ({exc})\n")
            # A step's wall time runs from the previous step's end: data loading, logging and callbacks
            # between steps belong to the run's throughput, as they do in the Trainer's own runtime.
            self.t_start = self.last_end if self.last_end is not None else time.time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            seen = getattr(state, "num_input_tokens_seen", None)
            tokens = None
            if seen is not None:
                tokens = int(seen) - self.tokens_seen
                self.tokens_seen = int(seen)
            samples = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            self.last_end = time.time()
            et.record_step(
                self.t_start,
                self.last_end,
                tokens=tokens,
                samples=samples,
                step=state.global_step,
                epoch=state.epoch,
                comm_s=comm.take(),
            )

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                et.log(
                    loss=logs.get("loss"),
                    lr=logs.get("learning_rate"),
                    grad_norm=logs.get("grad_norm"),
                    epoch=logs.get("epoch"),
                )

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            et.flush()

    return EffmonCallback()
