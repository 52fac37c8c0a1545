"""Configuration files shipped with anatomodel (presets, printers, coding rules, example cases)."""
