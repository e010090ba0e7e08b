"""Data access: one module per collection family, async functions taking ``db`` first.

Only these modules and ``service/db.py`` name collections or import the driver.
"""
