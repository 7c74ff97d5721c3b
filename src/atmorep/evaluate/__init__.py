"""atmorep.evaluate."""
