"""Patient pages: the questionnaire on a phone or a clinic tablet."""
