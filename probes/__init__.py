"""What we probe with: ordinal task sets, demonstration sets, arithmetic data."""
