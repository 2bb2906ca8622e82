"""From a validated config to the sweep: shapes per TP size, points, and the settings results depend on."""
