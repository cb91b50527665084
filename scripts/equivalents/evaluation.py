"""Equivalent mutants of ``evaluation`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

_same(
    "evaluation",
    "the first result always replaces it (iter_run yields at least one batch: at least one sequence)",
    ("lens_name = None", 'lens_name = ""'),
)
_same(
    "evaluation",
    "tokens == seq_len: the branch sets seq_len = max(2, tokens) = seq_len (seq_len >= 2 is checked above)",
    (
        "if tokens is not None and tokens < seq_len:  # less than one sequence: one shorter sequence, not 512",
        "if tokens is not None and tokens <= seq_len:  # less than one sequence: one shorter sequence, not 512",
    ),
)
_same(
    "evaluation",
    "torch infers int64 from Python ints (the fill -1, the token ids): the same long tensor",
    (
        "padded = torch.full((n, t_max + 1), -1, dtype=torch.long)",
        "padded = torch.full((n, t_max + 1), -1, dtype=None)",
    ),
    (
        "padded = torch.full((n, t_max + 1), -1, dtype=torch.long)",
        "padded = torch.full((n, t_max + 1), -1, )",
    ),
    (
        "padded[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)",
        "padded[i, : len(seq)] = torch.as_tensor(seq, dtype=None)",
    ),
    (
        "padded[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)",
        "padded[i, : len(seq)] = torch.as_tensor(seq, )",
    ),
)
_same(
    "evaluation",
    "a column past t_max is never gathered: positions + 1 <= t_max",
    (
        "padded = torch.full((n, t_max + 1), -1, dtype=torch.long)",
        "padded = torch.full((n, t_max + 2), -1, dtype=torch.long)",
    ),
)
_same(
    "evaluation",
    "positions + 1 >= 0 already; clamping to 1 changes only padding cells (position -1), which the next "
    "line replaces by -1",
    (
        "nxt = padded.gather(1, (res.positions + 1).clamp_min(0))",
        "nxt = padded.gather(1, (res.positions + 1).clamp_min(1))",
    ),
)
_same(
    "evaluation",
    "numpy reads any negative size in reshape as the one unknown dimension: the same flat array",
    (
        "row = np.asarray(row, dtype=np.int64).reshape(-1)",
        "row = np.asarray(row, dtype=np.int64).reshape(-2)",
    ),
    (
        "values = np.asarray(values, dtype=np.float64).reshape(-1)",
        "values = np.asarray(values, dtype=np.float64).reshape(-2)",
    ),
)
_same(
    "evaluation",
    "astype(None) is astype(float64) in numpy",
    (
        "cnt = np.bincount(row, minlength=n_rows).astype(np.float64)  # (R,)",
        "cnt = np.bincount(row, minlength=n_rows).astype(None)  # (R,)",
    ),
)
_same(
    "evaluation",
    "Python floats (Row.depth is a division): numpy makes float64 without being told",
    (
        '"depth": np.array([r.depth(self.n_layers) for r in self.rows], dtype=np.float64),',
        '"depth": np.array([r.depth(self.n_layers) for r in self.rows], dtype=None),',
    ),
    (
        '"depth": np.array([r.depth(self.n_layers) for r in self.rows], dtype=np.float64),',
        '"depth": np.array([r.depth(self.n_layers) for r in self.rows], ),',
    ),
)
_same(
    "evaluation",
    "var is only read through se's division, whose where=n > 1 and NaN-filled out replace every cell the "
    "where below leaves unset",
    (
        "self._m2.get(name, np.zeros(self.n_rows)), n - 1, out=np.full(self.n_rows, np.nan), where=n > 1",
        "self._m2.get(name, np.zeros(self.n_rows)), n - 1, out=None, where=n > 1",
    ),
    (
        "self._m2.get(name, np.zeros(self.n_rows)), n - 1, out=np.full(self.n_rows, np.nan), where=n > 1",
        "self._m2.get(name, np.zeros(self.n_rows)), n - 1, where=n > 1",
    ),
)
_same(
    "evaluation",
    "where n <= 1, var is NaN already (its out), and NaN / n is NaN with no floating-point flag raised: the "
    "same se, no warning",
    (
        "se = np.sqrt(np.divide(var, n, out=np.full(self.n_rows, np.nan), where=n > 1))",
        "se = np.sqrt(np.divide(var, n, out=np.full(self.n_rows, np.nan), ))",
    ),
    (
        "se = np.sqrt(np.divide(var, n, out=np.full(self.n_rows, np.nan), where=n > 1))",
        "se = np.sqrt(np.divide(var, n, out=np.full(self.n_rows, np.nan), where=n >= 1))",
    ),
)
_same(
    "evaluation",
    "where total == 0 (a row with no value in either part) frac is multiplied by delta = 0 and n0 = 0, so "
    "any value numpy leaves in those cells of an out-less divide gives the same mean and M2; only an "
    "uninitialised inf or NaN there would show, which no test can arrange",
    (
        "frac = np.divide(cnt, total, out=np.zeros(self.n_rows), where=total > 0)",
        "frac = np.divide(cnt, total, where=total > 0)",
    ),
    (
        "frac = np.divide(cnt, total, out=np.zeros(self.n_rows), where=total > 0)",
        "frac = np.divide(cnt, total, out=None, where=total > 0)",
    ),
)
_same(
    "evaluation",
    'float() parses "NAN" as "nan"',
    (
        'tokens_per_s=total / seconds if seconds > 0 else float("nan"),',
        'tokens_per_s=total / seconds if seconds > 0 else float("NAN"),',
    ),
)
_same(
    "evaluation",
    "np.append without an axis flattens its arguments: any shape of the state gives the same row",
    (
        "buf[group.rank] = np.append(state.reshape(-1), seconds)",
        "buf[group.rank] = np.append(state.reshape(None), seconds)",
    ),
    (
        "buf[group.rank] = np.append(state.reshape(-1), seconds)",
        "buf[group.rank] = np.append(state.reshape(-2), seconds)",
    ),
)
_same(
    "evaluation",
    "every later use widens the values to float64 anyway: np.bincount casts its weights to double and "
    "values - mean[row] promotes to float64 (mean is float64), so float32 or int values give the same sums",
    (
        "values = np.asarray(values, dtype=np.float64).reshape(-1)",
        "values = np.asarray(values, dtype=None).reshape(-1)",
    ),
    (
        "values = np.asarray(values, dtype=np.float64).reshape(-1)",
        "values = np.asarray(values, ).reshape(-1)",
    ),
)
