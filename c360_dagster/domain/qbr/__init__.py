"""QBR packs: the customer's deck and pack, the internal review, their layout and PowerPoint drawing."""
