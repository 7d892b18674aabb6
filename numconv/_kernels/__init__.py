"""Jitted kernels. Each takes C-contiguous arrays of one floating dtype (float32
or float64, the same for every array argument) and plain ints, checks nothing,
and writes into output arrays the caller allocated. Shapes are documented per
kernel; the Python layer in ``numconv._api`` guarantees them.
"""
