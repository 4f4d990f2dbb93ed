"""HoloViews element factories (``create_*``): pure functions of arrays, no widgets."""
