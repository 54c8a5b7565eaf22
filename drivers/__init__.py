"""Hardware adapters the cabinet uses: slot boards (Modbus), slot locks (gpiozero), code reader (serial).

Import the submodules (``drivers.battery_bus``, ``drivers.locks``, ``drivers.code_reader``,
``drivers.register_map``); this package re-exports nothing so that importing one adapter
does not pull in the others' libraries.
"""
