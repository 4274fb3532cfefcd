"""Files, folders, downloads, devices: what every room stands on."""
