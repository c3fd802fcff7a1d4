"""Loss terms; each returns (scalar, dict of named scalar metrics), reductions in fp32."""
