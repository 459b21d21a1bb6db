from ahn.ops.mamba2.chunk import mamba_chunk_scan_combined
from ahn.ops.mamba2.naive import naive_recurrent_mamba2

__all__ = ["mamba_chunk_scan_combined", "naive_recurrent_mamba2"]
