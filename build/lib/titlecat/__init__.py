"""titlecat: seniority and department of a job title, as spaCy pipelines."""

__version__ = "0.1.0"
