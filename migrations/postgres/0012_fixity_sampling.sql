-- A pack larger than what is left of the day's fixity budget is checked a few members at a
-- time (each read by range): next_member is how many members, in tar order, this cycle has
-- checked so far; 0 marks a complete check (the whole pack, or the last of its members).
ALTER TABLE fixity_check ADD COLUMN next_member BIGINT NOT NULL DEFAULT 0;
