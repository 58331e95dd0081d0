"""Pure planning: desired state -> kernel objects -> operations. No I/O."""
