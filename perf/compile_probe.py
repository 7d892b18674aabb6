"""Time one fresh process from ``import numconv`` to its first forward and backward.

Run by the harness in a subprocess whose ``NUMBA_CACHE_DIR`` points at an empty
folder (cold: every kernel compiles) or at the folder a cold run just filled
(warm: every kernel loads from the cache). Nothing but the standard library is
imported before the clock starts, so the figure includes importing NumPy and
Numba. Prints one JSON object on stdout.

Usage: python perf/compile_probe.py DTYPE SHAPE_JSON
"""

import json
import sys
import time


def main():
    start = time.perf_counter()
    import numconv  # noqa: I001  (the import is part of what is timed)
    import numpy as np

    imported = time.perf_counter()
    dtype = np.dtype(sys.argv[1])
    s = json.loads(sys.argv[2])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((s["N"], s["C_in"], s["L"])).astype(dtype)
    C_in_g = s["C_in"] // s["groups"]
    w = rng.standard_normal((s["C_out"], C_in_g, s["K"])).astype(dtype)
    b = rng.standard_normal(s["C_out"]).astype(dtype)
    opts = {key: s[key] for key in ("stride", "padding", "dilation", "groups")}
    prepared = time.perf_counter()

    y = numconv.conv1d(x, w, b, **opts)
    forward_done = time.perf_counter()
    numconv.conv1d_backward(x, w, np.ones_like(y), bias=True, **opts)
    backward_done = time.perf_counter()

    # Making the random inputs is not numconv's work; it is left out of the total.
    setup = prepared - imported
    print(
        json.dumps(
            {
                "import_s": imported - start,
                "first_forward_s": forward_done - prepared,
                "first_backward_s": backward_done - forward_done,
                "total_s": backward_done - start - setup,
            }
        )
    )


if __name__ == "__main__":
    main()
