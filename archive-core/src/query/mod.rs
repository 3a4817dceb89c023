//! C-FIND's query model, independent of DICOM encoding: which level, which attributes, and how
//! each is matched (PS3.4 C.2.2.2). The DICOM side turns an identifier into a [`FindQuery`];
//! the index answers it with [`FindRow`]s without opening a single file.

mod attribute;
mod keys;
mod matcher;

pub use attribute::{Attr, ValueKind};
pub use keys::{attribute_of, tag_of};
pub use matcher::{Matcher, MatcherError};

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    /// `QueryRetrieveLevel` (0008,0052) text.
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" => Some(Level::Image),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }
}

/// The information model the query came in on: it decides which levels are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    PatientRoot,
    StudyRoot,
}

impl Model {
    /// Study Root has no PATIENT level (PS3.4 C.6.2).
    pub fn has_level(self, level: Level) -> bool {
        !(self == Model::StudyRoot && level == Level::Patient)
    }
}

/// One key of the identifier: the attribute and how to match it (Universal returns the value
/// without constraining the match).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryKey {
    pub attr: Attr,
    pub matcher: Matcher,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindQuery {
    pub level: Level,
    pub keys: Vec<QueryKey>,
    /// Rows wanted at most; the index returns up to `limit + 1` so callers can tell that the
    /// answer was cut short.
    pub limit: usize,
    /// Rows to skip, in a stable order (QIDO-RS paging); `None`: no paging and no order, as
    /// C-FIND wants.
    pub offset: Option<usize>,
}

/// One match: the value of every attribute the query asked for (and the level's unique key).
pub type FindRow = HashMap<Attr, String>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{attr:?} is a {key_level:?}-level key and cannot be used in a {level:?}-level query")]
    KeyBelowLevel {
        attr: Attr,
        key_level: Level,
        level: Level,
    },
    #[error("the {model:?} model has no {level:?} level")]
    LevelNotInModel { model: Model, level: Level },
}

impl FindQuery {
    /// Checks PS3.4 C.4.1.2 hierarchy rules: keys may come from the query level and above.
    pub fn validate(&self, model: Model) -> Result<(), QueryError> {
        if !model.has_level(self.level) {
            return Err(QueryError::LevelNotInModel {
                model,
                level: self.level,
            });
        }
        for key in &self.keys {
            let key_level = key.attr.level();
            if key_level > self.level {
                return Err(QueryError::KeyBelowLevel {
                    attr: key.attr,
                    key_level,
                    level: self.level,
                });
            }
        }
        Ok(())
    }
}
