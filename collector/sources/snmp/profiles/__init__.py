"""Built-in SNMP vendor profiles (YAML data files, one per vendor), shipped as package data.

Nothing to import here: :mod:`collector.sources.snmp.vendor_profiles` reads
the ``*.yaml`` files in this folder. Being a package is what makes the
packaging rules ship the files with the wheel.
"""
