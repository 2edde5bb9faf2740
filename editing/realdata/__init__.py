"""Real evaluation data that ships with featureedit (no download).

* ``facts.json``: genuine world knowledge (capitals, authors, chemical symbols...) with edit and
  held-out prompt templates per relation (:mod:`editing.realdata.facts`); which facts a model
  actually knows is measured by :mod:`editing.realdata.probe` (``featureedit facts probe``).
* ``wikipedia_*.txt``, ``books_*.txt``: natural English text (Wikipedia articles, public-domain
  books) for SAE training and ΔPPL
  (:mod:`editing.realdata.text`; license and provenance in ``TEXT_LICENSE.md``).
"""
