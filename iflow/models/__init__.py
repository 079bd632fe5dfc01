"""The models: the identifiable flow, the VAE family, their decoders, and the builder that names them."""
