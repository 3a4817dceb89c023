//! DICOM JSON (PS3.18 F.2) for what the index answers: each value in the encoding its VR asks
//! for (person names as objects, numbers as numbers, multi-values split on backslashes).

use archive_core::query::{tag_of, Attr, FindRow};
use dicom_core::VR;
use serde_json::{json, Map, Value};

/// `"GGGGEEEE"`: the key of an attribute in a DICOM JSON object.
pub fn key(group: u16, element: u16) -> String {
    format!("{group:04X}{element:04X}")
}

/// One attribute: `{"vr": …, "Value": […]}`, without `Value` when `text` is empty.
pub fn attribute(vr: VR, text: &str) -> Value {
    let vr_name = vr.to_string();
    if text.is_empty() {
        return json!({ "vr": vr_name });
    }
    let values: Vec<Value> = text
        .split('\\')
        .map(|value| match vr {
            VR::PN => json!({ "Alphabetic": value }),
            VR::IS | VR::SL | VR::SS | VR::UL | VR::US => value
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(value)),
            VR::DS | VR::FL | VR::FD => value
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(|| Value::from(value)),
            _ => Value::from(value),
        })
        .collect();
    json!({ "vr": vr_name, "Value": values })
}

/// A QIDO-RS answer for one match: every attribute the row holds, in its VR.
pub fn row_object(row: &FindRow, attrs: &[Attr]) -> Map<String, Value> {
    let mut tagged: Vec<_> = attrs
        .iter()
        .filter_map(|attr| {
            let tag = tag_of(*attr);
            archive_core::query::attribute_of(tag).map(|(_, vr)| (tag, vr, *attr))
        })
        .collect();
    // DICOM JSON lists attributes in tag order, as a data set is.
    tagged.sort_by_key(|(tag, _, _)| *tag);
    let mut object = Map::new();
    for (tag, vr, attr) in tagged {
        let text = row.get(&attr).map(String::as_str).unwrap_or("");
        object.insert(key(tag.group(), tag.element()), attribute(vr, text));
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_their_vr_encoding() {
        assert_eq!(
            attribute(VR::PN, "DOE^JANE"),
            json!({"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]})
        );
        assert_eq!(attribute(VR::IS, "12"), json!({"vr": "IS", "Value": [12]}));
        assert_eq!(
            attribute(VR::CS, "CT\\MR"),
            json!({"vr": "CS", "Value": ["CT", "MR"]})
        );
        assert_eq!(attribute(VR::DA, ""), json!({"vr": "DA"}));
        assert_eq!(key(0x0010, 0x0010), "00100010");
    }
}
