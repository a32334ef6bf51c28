"""A GGUF string array (a vocabulary holds 10^5 of them) read in one compiled loop: the
reader (reader.py) makes the same bounds checks and raises the errors."""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy


def read_strings(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t size, Py_ssize_t n):
    """(strings, pos, status) after reading up to ``n`` length-prefixed strings from
    ``buf[pos:size]``. status 0: all read; 1: the next length does not fit; 2: the next
    string claims more bytes than remain (pos is at its length). A string that is not
    UTF-8 is kept as bytes."""
    cdef list out = []
    cdef uint64_t length
    cdef Py_ssize_t i
    cdef const char* p
    for i in range(n):
        if pos + 8 > size:
            return out, pos, 1
        memcpy(&length, &buf[pos], 8)   # little-endian hosts only, as the kernels
        if length > <uint64_t>(size - pos - 8):
            return out, pos, 2
        pos += 8
        p = <const char*>&buf[0] + pos
        try:
            out.append(PyUnicode_DecodeUTF8(p, <Py_ssize_t>length, NULL))
        except UnicodeDecodeError:
            out.append(PyBytes_FromStringAndSize(p, <Py_ssize_t>length))
        pos += <Py_ssize_t>length
    return out, pos, 0
