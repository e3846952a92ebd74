-- Limiter state (issue 18): one row per limiter key, replaced only from the version read,
-- so rate and concurrency limits hold across every worker sharing the database.
CREATE TABLE omniq_limiters (
    limiter VARBINARY(512) NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL,
    state MEDIUMBLOB NOT NULL
) ENGINE = InnoDB;
