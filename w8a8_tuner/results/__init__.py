"""Result files: per-point TSVs, engine JSON files and their names, atomic writes, manifests."""
