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
            callback = make_callback(self)
            self.add_callback(callback)
            instrument(self, callback)
        except Exception as exc:  # never break training
            sys.stderr.write(f"effmon: could not instrument this Trainer ({exc})\n")

    trainer_cls.__init__ = __init__
    setattr(trainer_cls, PATCHED, True)


def instrument(trainer: Any, callback: Any) -> None:
    """Wrap this Trainer's own methods (on the instance; the class and the user's settings are untouched):
    ``get_batch_samples`` hands over the batches of each optimizer step, counted by ``callback``;
    ``evaluate``, ``_save_checkpoint`` and ``log`` are timed as phases of their own, outside the steps."""
    fetch = getattr(trainer, "get_batch_samples", None)
    if fetch is not None:

        def get_batch_samples(*args: Any, **kwargs: Any) -> Any:
            result = fetch(*args, **kwargs)
            try:
                callback.counter.add(result[0], trainer)
            except Exception as exc:  # counting is never worth a failed step
                callback.counter.failed = str(exc)
            return result

        trainer.get_batch_samples = get_batch_samples
    for method, name in (("evaluate", "eval"), ("_save_checkpoint", "save"), ("log", "log")):
        original = getattr(trainer, method, None)
        if original is not None:
            setattr(trainer, method, _timed(original, name, callback))


def _timed(original: Any, name: str, callback: Any) -> Any:
    import effmon.track as et

    def timed(*args: Any, **kwargs: Any) -> Any:
        if callback.in_phase:  # a log inside an evaluation belongs to the evaluation
            return original(*args, **kwargs)
        callback.in_phase = True
        t0 = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            callback.in_phase = False
            et.span(name, t0, time.time())

    return timed


class BatchCounter:
    """Samples, real (non-padding) tokens and padded positions of the batches of one optimizer step, counted
    the way the Trainer's ``include_num_input_tokens_seen="non_padding"`` counts (the attention mask, else the
    tokens that are not the pad token), but per rank and without a host sync: shapes are metadata, and the
    real-token sum stays on the device until it is read once per optimizer step, after it is ready (a
    non-blocking copy and a CUDA event; at once on the CPU)."""

    def __init__(self) -> None:
        self.samples = 0
        self.padded = 0
        self.real: Any = None  # an int, or a tensor on the device
        self.exact = True
        self.failed: str | None = None

    def add(self, batches: list[Any], trainer: Any) -> None:
        name = getattr(getattr(trainer, "model", None), "main_input_name", "input_ids")
        for batch in batches:
            ids = batch.get(name) if hasattr(batch, "get") else None
            if ids is None or not hasattr(ids, "shape"):
                self.exact = False
                continue
            self.samples += int(ids.shape[0])
            self.padded += int(ids.numel())
            mask = batch.get("attention_mask")
            if mask is not None:
                real = mask.sum()
            else:
                pad = getattr(getattr(trainer, "processing_class", None), "pad_token_id", None)
                real = (ids != pad).sum() if pad is not None else int(ids.numel())
            self.real = real if self.real is None else self.real + real

    def take(self) -> dict[str, Any]:
        counts = {"samples": self.samples, "padded_tokens": self.padded, "real": self.real}
        self.samples, self.padded, self.real = 0, 0, None
        return counts


def _start_read(value: Any) -> tuple[Any, Any]:
    """(value or host copy, event): a device tensor is copied to the host without waiting; the event says when."""
    if value is None or isinstance(value, int):
        return value, None
    if getattr(value, "is_cuda", False):
        import torch

        host = value.detach().to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event
    return int(value), None


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


def describe_precision(model: Any, args: Any) -> dict[str, Any]:
    """What MCR needs without flags: the weights' dtype, the mixed-precision mode and any quantization."""
    out: dict[str, Any] = {}
    try:
        dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()}) if model is not None else []
    except Exception:
        dtypes = []
    out["dtypes"] = dtypes
    if args is not None:
        out["mixed_precision"] = (
            "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) else "no"
        )
        out["tf32"] = bool(getattr(args, "tf32", False))
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    quant: dict[str, Any] | None = None
    if config is not None:
        doc = config.to_dict() if hasattr(config, "to_dict") else dict(config) if isinstance(config, dict) else {}
        method = str(doc.get("quant_method", "")).split(".")[-1].lower() or "quantized"
        bits = doc.get("bits") or doc.get("w_bit")
        if doc.get("load_in_4bit"):
            bits, method = 4, str(doc.get("bnb_4bit_quant_type") or "bnb-4bit")
        elif doc.get("load_in_8bit"):
            bits, method = 8, "bnb-8bit"
        quant = {"method": method, "bits": bits}
        out["quantization"] = quant
    # the session's precision for MCR: the quantization when there is one, else the training compute dtype
    if quant is not None:
        out["precision"] = (
            quant["method"]
            if quant["method"] in _KNOWN_PRECISIONS
            else f"int{quant['bits']}"
            if quant["bits"]
            else None
        )
    elif out.get("mixed_precision") not in (None, "no"):
        out["precision"] = out["mixed_precision"]
    elif len(dtypes) == 1:
        out["precision"] = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtypes[0], dtypes[0])
    return out


_KNOWN_PRECISIONS = ("nf4", "fp4", "gptq", "awq", "bnb-4bit", "bnb-8bit", "fp8", "int8", "int4")


class StepReporter:
    """What the Trainer callback does, apart from transformers (whose ``TrainerCallback`` it is mixed into)."""

    def __init__(self, trainer: Any = None) -> None:
        self.trainer = trainer
        self.t_start = 0.0
        self.counter = BatchCounter()
        self.in_phase = False
        self.pending: list[tuple[dict[str, Any], Any, Any]] = []  # steps whose token count is on its way
        self.comm_tried = False

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        import effmon.track as et

        info = describe_model(model)
        info["world_size"] = getattr(args, "world_size", 1)
        info.update(describe_precision(model, args))
        et.model_info(**info)
        total = getattr(state, "max_steps", None)
        # max_steps, when given, ends the run whatever the epochs: then the epochs say nothing of its length
        epochs = getattr(args, "num_train_epochs", None) if (getattr(args, "max_steps", -1) or -1) <= 0 else None
        et.plan(total_steps=int(total) if total and total > 0 else None, epochs=float(epochs) if epochs else None)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.trainer is not None and not self.comm_tried:
            # DDP wraps the model once training has started: hook it before the first backward pass
            self.comm_tried = True
            try:
                _watch_ddp(getattr(self.trainer, "model_wrapped", None))
            except Exception as exc:
                sys.stderr.write(f"effmon: communication time is off ({exc})\n")
        # a step runs from here to on_step_end: data loading before it, and evaluation, saving and logging
        # after it (timed as phases of their own), are not in it
        self.t_start = time.time()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import effmon.track as et

        t_end = time.time()
        counts = self.counter.take()
        real, event = _start_read(counts.pop("real"))
        exact = self.counter.exact
        step = {
            "t_start": self.t_start,
            "t_end": t_end,
            "step": state.global_step,
            "epoch": state.epoch,
            "samples": counts["samples"] if exact else None,
            "padded_tokens": counts["padded_tokens"] if exact else None,
            **et.communication(),
        }
        self.pending.append((step, real, event))
        self.emit(wait=False)

    def emit(self, wait: bool) -> None:
        """Report the steps whose token count has reached the host, in order (at the end: all of them)."""
        import effmon.track as et

        while self.pending:
            step, real, event = self.pending[0]
            if event is not None:
                if not wait and not event.query():
                    return
                event.synchronize()
            self.pending.pop(0)
            tokens = int(real) if real is not None and self.counter.exact else None
            et.record_step(step.pop("t_start"), step.pop("t_end"), tokens=tokens, **step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        import effmon.track as et

        if logs and "loss" in logs:
            self.emit(wait=True)  # the log line belongs to the step just ended
            et.log(
                loss=logs.get("loss"),
                lr=logs.get("learning_rate"),
                grad_norm=logs.get("grad_norm"),
                epoch=logs.get("epoch"),
            )

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import effmon.track as et

        self.emit(wait=True)
        if self.counter.failed:
            sys.stderr.write(f"effmon: tokens and samples were not counted ({self.counter.failed})\n")
        et.flush()


def make_callback(trainer: Any = None) -> Any:
    from transformers import TrainerCallback

    class EffmonCallback(StepReporter, TrainerCallback):  # type: ignore[misc]
        pass

    return EffmonCallback(trainer)


def _watch_ddp(wrapped: Any) -> None:
    try:
        from torch.nn.parallel import DistributedDataParallel
    except ImportError:
        return
    if isinstance(wrapped, DistributedDataParallel):
        import effmon.track as et

        et.ddp(wrapped)
