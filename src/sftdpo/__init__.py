"""sftdpo: controlled SFT / DPO / SFT->DPO studies on small causal language models."""

__version__ = "0.1.0"
