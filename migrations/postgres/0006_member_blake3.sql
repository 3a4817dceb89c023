-- Each pack member's BLAKE3, recorded when the pack is written. Retrieval checks members with
-- it (several times cheaper than SHA-256 on the CPU, and as strong); verify-sync and the
-- manifest keep SHA-256. Packs written before this have '' and are checked with SHA-256.
ALTER TABLE pack_member ADD COLUMN blake3 TEXT NOT NULL DEFAULT '';
