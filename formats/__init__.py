"""Byte-level codecs of the ``.sqc`` bitstream: bit packing, canonical Huffman, sparse indices."""
