"""Equivalent mutants of ``training`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

RANKS_ONLY = (
    "ranks only: in one process (world size 1) ids[0::1] is ids, the last micro-batch test only picks "
    "nullcontext over no_sync, and the branch under `if group.distributed` never runs, so these change nothing; "
    "with two or more ranks they are observable, and tests/tasks/test_distributed.py's two-rank training "
    "(rank processes that import the unmutated source, out of mutmut's reach) checks them"
)

_same(
    "training",
    DEVICE_ONLY,
    (
        ").to(decoder.device)  # (B, L + 1, T, d)",
        ").to(None)  # (B, L + 1, T, d)",
    ),
    (
        "input_ids.to(dev), torch.ones_like(input_ids).to(dev), gather.to(dev), default_rows(n_translators)",
        "input_ids.to(None), torch.ones_like(input_ids).to(dev), gather.to(dev), default_rows(n_translators)",
    ),
    (
        "input_ids.to(dev), torch.ones_like(input_ids).to(dev), gather.to(dev), default_rows(n_translators)",
        "input_ids.to(dev), torch.ones_like(input_ids).to(None), gather.to(dev), default_rows(n_translators)",
    ),
    (
        "input_ids.to(dev), torch.ones_like(input_ids).to(dev), gather.to(dev), default_rows(n_translators)",
        "input_ids.to(dev), torch.ones_like(input_ids).to(dev), gather.to(None), default_rows(n_translators)",
    ),
    (
        "return h if tuned is None else tuned.translate(torch.arange(h.shape[1], device=h.device), h)",
        "return h if tuned is None else tuned.translate(torch.arange(h.shape[1], device=None), h)",
    ),
    (
        "return h if tuned is None else tuned.translate(torch.arange(h.shape[1], device=h.device), h)",
        "return h if tuned is None else tuned.translate(torch.arange(h.shape[1], ), h)",
    ),
    (
        "return self.lens.translate(torch.arange(h.shape[1], device=h.device), h)",
        "return self.lens.translate(torch.arange(h.shape[1], device=None), h)",
    ),
    (
        "return self.lens.translate(torch.arange(h.shape[1], device=h.device), h)",
        "return self.lens.translate(torch.arange(h.shape[1], ), h)",
    ),
    (
        "h, final = h[keep.to(h.device)], final[keep.to(final.device)]",
        "h, final = h[keep.to(None)], final[keep.to(final.device)]",
    ),
    (
        "h, final = h[keep.to(h.device)], final[keep.to(final.device)]",
        "h, final = h[keep.to(h.device)], final[keep.to(None)]",
    ),
    (
        "tuned = TunedLens.for_model(lens).to(lens.decoder.device)",
        "tuned = TunedLens.for_model(lens).to(None)",
    ),
    (
        'ids = [dev.index] if dev.type == "cuda" else None',
        "ids = None",
    ),
    (
        'ids = [dev.index] if dev.type == "cuda" else None',
        'ids = [dev.index] if (dev.type == "cuda") and False else None',
    ),
    (
        'ids = [dev.index] if dev.type == "cuda" else None',
        'ids = [dev.index] if dev.type == "XXcudaXX" else None',
    ),
    (
        'ids = [dev.index] if dev.type == "cuda" else None',
        'ids = [dev.index] if dev.type == "CUDA" else None',
    ),
)

_same(
    "training",
    (
        "the autocast dtype on the CPU: torch.autocast's default dtype for the CPU is bfloat16, the only dtype "
        "training autocasts to (float32 takes no autocast at all), so dtype=None or no dtype autocasts the same; on "
        "a CUDA device the default is float16, observable there like DEVICE_ONLY"
    ),
    (
        "return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)",
        "return functools.partial(torch.autocast, device_type=device.type, dtype=None)",
    ),
    (
        "return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)",
        "return functools.partial(torch.autocast, device_type=device.type, )",
    ),
)

_same(
    "training",
    RANKS_ONLY,
    (
        "mine = ids[group.rank :: group.world_size] if group.distributed else ids",
        "mine = ids[group.rank :: group.world_size] if (group.distributed) and False else ids",
    ),
    (
        "mine = ids[group.rank :: group.world_size] if group.distributed else ids",
        "mine = ids[group.rank :: group.world_size] if (group.distributed) or True else ids",
    ),
    (
        "last = i == len(batches) - 1",
        "last = None",
    ),
    (
        "last = i == len(batches) - 1",
        "last = i != len(batches) - 1",
    ),
    (
        "last = i == len(batches) - 1",
        "last = i == len(batches) + 1",
    ),
    (
        "last = i == len(batches) - 1",
        "last = i == len(batches) - 2",
    ),
    (
        "sync = contextlib.nullcontext() if last or not group.distributed else run.module.no_sync()",
        "sync = contextlib.nullcontext() if (last or not group.distributed) or True else run.module.no_sync()",
    ),
    (
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}\'s loss"))',
        "per_row = None",
    ),
    (
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}\'s loss"))',
        "per_row = torch.from_numpy(None)",
    ),
    (
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}\'s loss"))',
        'per_row = torch.from_numpy(distributed.all_sum(None, f"step {step + 1}\'s loss"))',
    ),
    (
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}\'s loss"))',
        "per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), None))",
    ),
    (
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}\'s loss"))',
        'per_row = torch.from_numpy(distributed.all_sum(f"step {step + 1}\'s loss"))',
    ),
    (
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}\'s loss"))',
        "per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), ))",
    ),
    (
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}\'s loss"))',
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step - 1}\'s loss"))',
    ),
    (
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 1}\'s loss"))',
        'per_row = torch.from_numpy(distributed.all_sum(per_row.numpy(), f"step {step + 2}\'s loss"))',
    ),
)

_same(
    "training",
    (
        "memory only: zero_grad(set_to_none=False) leaves zero gradients instead of None, and the backward pass adds "
        "each step's gradient to them (0 + g is g exactly); every translator parameter gets a gradient each step"
    ),
    (
        "run.opt.zero_grad(set_to_none=True)",
        "run.opt.zero_grad(set_to_none=None)",
    ),
    (
        "run.opt.zero_grad(set_to_none=True)",
        "run.opt.zero_grad(set_to_none=False)",
    ),
)

_same(
    "training",
    (
        "x's graph reaches only the translators (the rows come from a forward pass under inference mode, cloned "
        "into plain tensors that need no gradient): backward into every leaf of the graph is backward into "
        "run.params, and the frozen model's parameters keep grad None either way (test_training.py checks it)"
    ),
    (
        "x.backward(grad_x, inputs=run.params)  # then through the translators, once",
        "x.backward(grad_x, inputs=None)  # then through the translators, once",
    ),
    (
        "x.backward(grad_x, inputs=run.params)  # then through the translators, once",
        "x.backward(grad_x, )  # then through the translators, once",
    ),
)

_same(
    "training",
    "the argument given is the default: row_kl's tuned is None (the logit lens) by default",
    (
        "logit = row_kl(lens, ids, None, next_token_only=True, dtype=dtype)",
        "logit = row_kl(lens, ids, next_token_only=True, dtype=dtype)",
    ),
)

_same(
    "training",
    DEFAULT_ARG,
    (
        "final = torch.log_softmax(decoder.logits(captured[:, -1].flatten(0, 1)).float(), -1)  # (B*T, V)",
        "final = torch.log_softmax(decoder.logits(captured[:, -1].flatten(0, 1)).float(), +1)  # (B*T, V)",
    ),
    (
        "logq = torch.log_softmax(logits.detach().float(), -1).view(m, n_rows, -1)  # (m, L, V)",
        "logq = torch.log_softmax(logits.detach().float(), +1).view(m, n_rows, -1)  # (m, L, V)",
    ),
    (
        "neg_entropy = (p * final).sum(-1, keepdim=True)  # (m, 1) <p_f, log p_f>",
        "neg_entropy = (p * final).sum(+1, keepdim=True)  # (m, 1) <p_f, log p_f>",
    ),
)

_same(
    "training",
    (
        "Decoder.logits_functional returns fp32 logits, also under autocast (kernels.unembed casts), and the "
        "gradient is built in fp32 from the fp32 log-probabilities: .to(logits.dtype) is .to(torch.float32) on an "
        "fp32 tensor, a no-op like .to(None)"
    ),
    (
        "(grad,) = torch.autograd.grad(logits, x, grad_logits.view(m * n_rows, -1).to(logits.dtype))",
        "(grad,) = torch.autograd.grad(logits, x, grad_logits.view(m * n_rows, -1).to(None))",
    ),
)

_same(
    "training",
    (
        "dead guard: split_documents puts at least one document in the validation split of any corpus with two "
        "or more documents, and a corpus of one document has an empty train split, refused one line earlier; no "
        "LogitLensError reaches the suppress, so suppress(None) never runs its check"
    ),
    (
        "with contextlib.suppress(LogitLensError):  # a corpus of one document has no validation split",
        "with contextlib.suppress(None):  # a corpus of one document has no validation split",
    ),
)

_same(
    "training",
    (
        "dead else: every call of train_tuned_lens runs at least one step (a checkpoint is never written "
        "after the last step, so a resumed run starts before it), so run.losses and run.tokens_here are never "
        "empty or 0 when the facts are read"
    ),
    (
        '"final_loss": run.losses[-1] if run.losses else None,',
        '"final_loss": run.losses[-1] if (run.losses) or True else None,',
    ),
    (
        '"tokens_per_s": round(run.tokens_here / max(1e-9, run.elapsed), 2) if run.tokens_here else None,',
        '"tokens_per_s": round(run.tokens_here / max(1e-9, run.elapsed), 2) if (run.tokens_here) or True else None,',
    ),
)

_same(
    "training",
    'the argument given is the default: Corpus.split\'s split is "validation" by default',
    (
        'held_out = corpus.split("validation", seed=split_seed)',
        "held_out = corpus.split(seed=split_seed)",
    ),
)

_same(
    "training",
    DEVICE_ONLY,
    (
        '"wrapping the translators in DDP", lambda: DistributedDataParallel(run.module, device_ids=ids)',
        '"wrapping the translators in DDP", lambda: DistributedDataParallel(run.module, device_ids=None)',
    ),
)

_same(
    "training",
    DEVICE_ONLY,
    (
        "dev = lens.input_device",
        "dev = None",
    ),
)

_same(
    "training",
    (
        "every sequence keeps all its positions 0 .. T-1: a (T,) gather broadcasts against the backends' (B, 1) "
        "batch index (hooks and nnsight both read h[batch (B, 1), gather]; a left-padding family's shift (B, 1) "
        "broadcasts too) to the same (B, T) positions as the (B, T) gather"
    ),
    (
        "gather = torch.arange(t).expand(b, t)",
        "gather = torch.arange(t).expand(t)",
    ),
)
