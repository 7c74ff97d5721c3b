"""atmorep.infer."""
