"""Weight initialization vs. 8-bit quantization: the library behind the Snakemake study."""
