"""Student NER model, tags and meta-learned reweighting. Knows nothing about Label Studio."""
