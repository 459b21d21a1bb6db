"""The demo: a small shipped Qwen2 base that needs long context, and `ahn demo`, which trains a
GDN AHN on it by self-distillation and compares full / sliding / AHN (see docs/demo.md)."""
