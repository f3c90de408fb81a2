"""The five stages, one module each: decode, detect, infer, smooth, publish."""
