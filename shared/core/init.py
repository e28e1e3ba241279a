"""Reference initialisation of HRM in numpy (shared/DESIGN.md section 2) -> the canonical float32 weight dict.

Both backends build their modules empty and load this dict (`load_canonical`), so a seed gives the same model in
MLX and PyTorch. The canonical names equal both backends' module paths (shared/DESIGN.md section 2, "Canonical names").
numpy has no erf/erfinv: `erf` and `erfinv` below are accurate to about 1e-15.
"""

import math
import zlib

import numpy as np

from hrm_shared.core.config import ModelConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.registry import family_of

# JAX-style truncated normal on [-2, 2]: the std of N(0, 1) truncated there is 1 / TRUNC_STD_CORRECTION.
TRUNC_STD_CORRECTION = 1.0 / math.sqrt(
    1.0 - 4.0 * math.exp(-2.0) / math.sqrt(2 * math.pi) / math.erf(math.sqrt(2)))  # 1.1368472343...
# Never trained by autograd: the initial states and the puzzle table (sparse SignSGD).
NON_TRAINABLE = ("H_init", "L_init", "puzzle_emb.weights")

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_CHUNK = 1 << 20  # elements per erfinv pass: keeps the float64 temporaries in cache


def canonical_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """{canonical name: shape} of every tensor the model of `config`'s family holds (trainable or not); rotary tables
    are never saved."""
    return family_of(config).canonical_shapes(config)


def count_parameters(config: ModelConfig) -> int:
    """Trainable parameters: every canonical tensor except H_init, L_init and the puzzle table."""
    return sum(math.prod(shape) for name, shape in canonical_shapes(config).items() if name not in NON_TRAINABLE)


def init_weights(config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """The canonical float32 weight dict, initialised as the reference does.

    Each tensor draws from its own generator seeded by (seed, crc32(name)), so its values do not depend on which
    other tensors the config has.
    """
    weights = {}
    for name, shape in canonical_shapes(config).items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if name in ("H_init", "L_init"):
            weights[name] = round_to_bfloat16(truncated_normal(rng, shape, 1.0))
        elif name in ("q_head.weight", "puzzle_emb.weights"):
            weights[name] = np.zeros(shape, dtype=np.float32)
        elif name == "q_head.bias":
            weights[name] = np.full(shape, -5.0, dtype=np.float32)
        else:  # LeCun: linears [out, in] and both embedding tables [rows, hidden] have fan-in shape[-1]
            weights[name] = truncated_normal(rng, shape, 1.0 / math.sqrt(shape[-1]))
    return weights


def check_canonical(weights: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], context: str) -> None:
    """Raise HRMError (prefixed with `context`) naming the first missing, unexpected or misshapen tensor."""
    missing = [name for name in shapes if name not in weights]
    extra = sorted(set(weights) - set(shapes))
    if missing:
        raise HRMError(f"{context}: tensor {missing[0]!r} is missing ({len(missing)} missing); "
                       f"the weights were made for a different model config")
    if extra:
        raise HRMError(f"{context}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected); "
                       f"the weights were made for a different model config")
    for name, shape in shapes.items():
        if tuple(np.shape(weights[name])) != tuple(shape):
            raise HRMError(f"{context}: tensor {name!r} has shape {tuple(np.shape(weights[name]))} but the model "
                           f"needs {tuple(shape)}; the weights were made for a different model config")


def check_weights(config: ModelConfig, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`weights` checked against `config` (HRMError naming a bad tensor), returned as float32 arrays."""
    shapes = canonical_shapes(config)
    check_canonical(weights, shapes, "weights")
    return {name: np.asarray(weights[name], dtype=np.float32) for name in shapes}


def truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """float32 array of `shape`: JAX's truncated normal on [-2, 2] rescaled to std `std` (bounds +-2.27 std)."""
    lo, hi = math.erf(-2 / math.sqrt(2)), math.erf(2 / math.sqrt(2))
    scale = std * TRUNC_STD_CORRECTION
    u = rng.uniform(lo, hi, size=math.prod(shape))
    out = np.empty(u.shape, dtype=np.float32)
    for start in range(0, u.size, _CHUNK):
        part = slice(start, start + _CHUNK)
        out[part] = np.clip(erfinv(u[part]) * (math.sqrt(2) * scale), -2 * scale, 2 * scale)
    return out.reshape(shape)


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 array rounded to the nearest bfloat16 value (ties to even), kept as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function of a float64 array (same shape): the all-positive series below |x| = 3, erfc's continued
    fraction above."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    out = np.empty_like(a)
    small = a < 3.0
    s = a[small]
    # erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)); no cancellation, unlike Maclaurin's.
    term, total, n = s.copy(), s.copy(), 0
    while np.any(term > 1e-17 * total):
        n += 1
        term *= 2 * s * s / (2 * n + 1)
        total += term
    out[small] = _TWO_OVER_SQRT_PI * np.exp(-s * s) * total
    b = a[~small]
    frac = np.zeros_like(b)
    for k in range(60, 0, -1):  # erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
        frac = (k / 2) / (b + frac)
    out[~small] = 1.0 - np.exp(-b * b) / math.sqrt(math.pi) / (b + frac)
    return np.sign(x) * out


def erfinv(y: np.ndarray) -> np.ndarray:
    """Inverse error function of a float64 array in (-1, 1) (same shape): Giles' single-precision approximation
    (2010) evaluated in float64, then one Newton step with `erf`."""
    y = np.asarray(y, dtype=np.float64)
    w = -np.log((1.0 - y) * (1.0 + y))
    central = w < 5.0
    wc = w[central] - 2.5
    p = np.full_like(wc, 2.81022636e-08)
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164,
              0.246640727, 1.50140941):
        p = c + p * wc
    wt = np.sqrt(w[~central]) - 3.0
    q = np.full_like(wt, -0.000200214257)
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047,
              1.00167406, 2.83297682):
        q = c + q * wt
    x = np.empty_like(y)
    x[central] = p * y[central]
    x[~central] = q * y[~central]
    return x - (erf(x) - y) / (_TWO_OVER_SQRT_PI * np.exp(-x * x))

