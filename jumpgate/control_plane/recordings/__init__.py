"""Session recordings on the platform: where their parts are kept, and what is done with them."""
