-- The members of Groups kept as rows (the program cohort Groups, Group/icm-cohort-{program}):
-- one row per patient, written by one enrollment change at a time, so a large cohort is never
-- rewritten whole. The Group's stored JSON carries its definition and quantity; `member` is
-- materialised from these rows when the Group is read (store::members). Each row also has a
-- search_reference row (param 'member') on the Group, kept with it.
CREATE TABLE group_members (
    seq          BIGSERIAL PRIMARY KEY,
    group_id     TEXT    NOT NULL COLLATE "C",
    patient_id   TEXT    NOT NULL COLLATE "C",
    inactive     BOOLEAN NOT NULL,
    period_start TEXT,
    period_end   TEXT
);
CREATE UNIQUE INDEX group_members_key ON group_members (group_id, patient_id);
