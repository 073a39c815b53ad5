"""The rankings table (``table``), which score it is ranked by (``choice``), and comparing two
audits (``compare``)."""
