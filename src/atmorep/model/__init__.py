"""atmorep.model."""
