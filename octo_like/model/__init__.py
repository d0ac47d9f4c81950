"""The policy network: tokenizers, block transformer with readouts, action heads (model issue)."""
