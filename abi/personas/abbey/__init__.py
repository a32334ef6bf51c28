"""Abbey, the empathetic polymath: emotion detection, empathy injection, reasoning chains."""
