"""OOD-object synthesis (supplementary A.3): place a box, inpaint an object, refine it, extract its mask."""
