//! The pretrained image backbones this crate can run, chosen by name: each one's input size,
//! pixel normalisation, model-directory name and the architecture its manifest declares.
//!
//! | name | input | normalisation | multiply-adds |
//! |---|---|---|---|
//! | `mobilenet-v2` | 224 | ImageNet mean/std | 300 M |
//! | `efficientnet-lite0` | 224 | (pixel - 127) / 128 | 0.39 G |
//! | `efficientnet-lite1` | 240 | (pixel - 127) / 128 | 0.60 G |
//! | `efficientnet-lite2` | 260 | (pixel - 127) / 128 | 0.86 G |
//!
//! Every backbone gives 1280 pooled features and 1000 ImageNet logits.

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, VisionError};

/// ImageNet channel means (RGB, on the 0..1 scale).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB, on the 0..1 scale).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How 8-bit RGB values become network inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Normalization {
    /// `(value / 255 - mean) / std` with the ImageNet statistics (torchvision's models).
    ImageNetMeanStd,
    /// `(value - 127) / 128` on every channel (the EfficientNet-Lite release, chosen there so
    /// the input quantises well).
    Centered127Over128,
}

impl Normalization {
    /// Channel means and standard deviations on the 0..1 scale.
    pub fn mean_and_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Self::ImageNetMeanStd => (IMAGENET_MEAN, IMAGENET_STD),
            Self::Centered127Over128 => ([127.0 / 255.0; 3], [128.0 / 255.0; 3]),
        }
    }

    /// The normalised value of every 8-bit level, per channel.
    pub fn lookup_table(self) -> [[f32; 256]; 3] {
        let mut table = [[0f32; 256]; 3];
        for (channel, channel_table) in table.iter_mut().enumerate() {
            for (value, entry) in channel_table.iter_mut().enumerate() {
                *entry = match self {
                    Self::ImageNetMeanStd => {
                        (value as f32 / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
                    }
                    Self::Centered127Over128 => (value as f32 - 127.0) / 128.0,
                };
            }
        }
        table
    }
}

/// What the network expects as input: a square NHWC picture of `side` pixels, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkInput {
    pub side: u32,
    pub normalization: Normalization,
}

impl NetworkInput {
    /// Number of values in one NHWC input picture.
    pub fn value_count(self) -> usize {
        self.side as usize * self.side as usize * 3
    }
}

impl Default for NetworkInput {
    fn default() -> Self {
        BackboneKind::MobileNetV2.input()
    }
}

/// One of the supported pretrained backbones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum BackboneKind {
    /// torchvision's ImageNet MobileNetV2 (width 1.0).
    #[default]
    MobileNetV2,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
}

impl BackboneKind {
    /// Every backbone, in the order of the table above.
    pub const ALL: [Self; 4] = [
        Self::MobileNetV2,
        Self::EfficientNetLite0,
        Self::EfficientNetLite1,
        Self::EfficientNetLite2,
    ];

    /// Parse a backbone name (`mobilenet-v2`, `efficientnet-lite0`, ...); case-insensitive,
    /// underscores accepted for hyphens.
    pub fn parse(name: &str) -> Result<Self> {
        let wanted = name.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == wanted)
            .ok_or_else(|| VisionError::UnknownBackbone {
                name: name.to_string(),
                known: Self::ALL.iter().map(|kind| kind.as_str()).collect(),
            })
    }

    /// The backbone's name, also the name of its folder in the model root.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MobileNetV2 => "mobilenet-v2",
            Self::EfficientNetLite0 => "efficientnet-lite0",
            Self::EfficientNetLite1 => "efficientnet-lite1",
            Self::EfficientNetLite2 => "efficientnet-lite2",
        }
    }

    /// The `architecture` a model directory's manifest declares for this backbone.
    pub fn architecture(self) -> &'static str {
        match self {
            Self::MobileNetV2 => "mobilenet_v2",
            Self::EfficientNetLite0 => "efficientnet_lite0",
            Self::EfficientNetLite1 => "efficientnet_lite1",
            Self::EfficientNetLite2 => "efficientnet_lite2",
        }
    }

    /// The backbone whose manifest declares `architecture` (hyphens or underscores).
    pub fn from_architecture(architecture: &str) -> Option<Self> {
        let wanted = architecture.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|kind| kind.architecture() == wanted)
    }

    /// Side of the square input the backbone was trained at.
    pub fn input_size(self) -> u32 {
        match self {
            Self::MobileNetV2 | Self::EfficientNetLite0 => 224,
            Self::EfficientNetLite1 => 240,
            Self::EfficientNetLite2 => 260,
        }
    }

    /// The pixel normalisation the backbone was trained with.
    pub fn normalization(self) -> Normalization {
        match self {
            Self::MobileNetV2 => Normalization::ImageNetMeanStd,
            Self::EfficientNetLite0 | Self::EfficientNetLite1 | Self::EfficientNetLite2 => {
                Normalization::Centered127Over128
            }
        }
    }

    /// Input size and normalisation together.
    pub fn input(self) -> NetworkInput {
        NetworkInput {
            side: self.input_size(),
            normalization: self.normalization(),
        }
    }

    /// Shorter side before the centre crop in the ImageNet evaluation transform: the input size
    /// plus 32 (224 -> 256), i.e. the centre crop keeps size / (size + 32) of the shorter side.
    pub fn imagenet_shorter_side(self) -> u32 {
        self.input_size() + 32
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for BackboneKind {
    type Err = VisionError;

    fn from_str(name: &str) -> Result<Self> {
        Self::parse(name)
    }
}

/// A backbone (or two, their features side by side) and whether the features are averaged with
/// the mirror image's: everything that decides which features an image gets, so a trained head
/// must be served with the same choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BackboneChoice {
    pub kind: BackboneKind,
    /// A second backbone whose features follow the first's (an image gets 2 x 1280 features
    /// and both networks' time); `None` for one backbone.
    pub appended: Option<BackboneKind>,
    pub flip_averaging: bool,
}

impl BackboneChoice {
    pub fn new(kind: BackboneKind, flip_averaging: bool) -> Self {
        Self {
            kind,
            appended: None,
            flip_averaging,
        }
    }

    /// This choice with its features averaged with the mirror image's, or not.
    pub fn with_flip_averaging(self, flip_averaging: bool) -> Self {
        Self {
            flip_averaging,
            ..self
        }
    }

    /// This choice with `other`'s features appended to each image's.
    pub fn with_appended(self, other: BackboneKind) -> Self {
        Self {
            appended: Some(other),
            ..self
        }
    }

    /// Parses a backbone name or two joined by `+` (`mobilenet-v2+efficientnet-lite2`), without
    /// flip averaging. The same backbone twice is refused (it would only repeat its features).
    pub fn parse(name: &str) -> Result<Self> {
        let mut parts = name.split('+');
        let first = BackboneKind::parse(parts.next().unwrap_or_default())?;
        let choice = Self::new(first, false);
        let Some(second) = parts.next() else {
            return Ok(choice);
        };
        let second = BackboneKind::parse(second)?;
        if parts.next().is_some() || second == first {
            return Err(VisionError::UnknownBackbone {
                name: format!("{name} (at most two different backbones joined by +)"),
                known: BackboneKind::ALL.iter().map(|kind| kind.as_str()).collect(),
            });
        }
        Ok(choice.with_appended(second))
    }

    /// The backbones in feature order: `kind`, then `appended` when set.
    pub fn kinds(self) -> impl Iterator<Item = BackboneKind> {
        std::iter::once(self.kind).chain(self.appended)
    }

    /// One backbone of this choice alone, with the same flip averaging.
    pub fn single(self, kind: BackboneKind) -> Self {
        Self::new(kind, self.flip_averaging)
    }

    /// The name [`Self::parse`] reads: `mobilenet-v2` or `mobilenet-v2+efficientnet-lite2`.
    pub fn name(self) -> String {
        self.kinds()
            .map(BackboneKind::as_str)
            .collect::<Vec<_>>()
            .join("+")
    }

    /// An identifier of one backbone's features: `<name>[-flip]-<weights>` (for example
    /// `mobilenet-v2-a9ecad95f7d4` or `efficientnet-lite0-flip-4c409c45acee`), where `weights`
    /// names the weight file (a prefix of its sha256). A choice of two backbones is identified
    /// by both identifiers joined by `+` (see [`Self::joined_identifier`]); this one ignores
    /// `appended`.
    pub fn identifier(self, weights: &str) -> String {
        let flip = if self.flip_averaging { "-flip" } else { "" };
        format!("{}{flip}-{weights}", self.kind.as_str())
    }

    /// The identifier of the whole choice from each backbone's weights, in feature order.
    pub fn joined_identifier(self, weights: &[&str]) -> String {
        self.kinds()
            .zip(weights)
            .map(|(kind, weights)| self.single(kind).identifier(weights))
            .collect::<Vec<_>>()
            .join("+")
    }

    /// The choice an identifier names; `None` when it names no known backbone, or two with
    /// different flip averaging.
    pub fn from_identifier(identifier: &str) -> Option<Self> {
        let single = |part: &str| {
            BackboneKind::ALL.into_iter().find_map(|kind| {
                let rest = part.strip_prefix(kind.as_str())?.strip_prefix('-')?;
                Some(Self::new(kind, rest.starts_with("flip-")))
            })
        };
        let mut parts = identifier.split('+');
        let first = single(parts.next()?)?;
        match (parts.next(), parts.next()) {
            (None, _) => Some(first),
            (Some(second), None) => {
                let second = single(second)?;
                (second.flip_averaging == first.flip_averaging && second.kind != first.kind)
                    .then(|| first.with_appended(second.kind))
            }
            _ => None,
        }
    }
}

impl fmt::Display for BackboneChoice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.kind.as_str())?;
        if let Some(appended) = self.appended {
            write!(formatter, " + {appended}")?;
        }
        if self.flip_averaging {
            formatter.write_str(" with flip averaging")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for kind in BackboneKind::ALL {
            assert_eq!(BackboneKind::parse(kind.as_str()).ok(), Some(kind));
            assert_eq!(
                BackboneKind::from_architecture(kind.architecture()),
                Some(kind)
            );
            assert_eq!(kind.to_string().parse::<BackboneKind>().ok(), Some(kind));
        }
        assert_eq!(
            BackboneKind::parse(" EfficientNet_Lite2 ").ok(),
            Some(BackboneKind::EfficientNetLite2)
        );
        let error = BackboneKind::parse("resnet-50").expect_err("unknown");
        assert!(error.to_string().contains("mobilenet-v2"), "{error}");
        assert_eq!(BackboneKind::default(), BackboneKind::MobileNetV2);
    }

    #[test]
    fn choices_round_trip_through_identifiers() {
        for kind in BackboneKind::ALL {
            for flip_averaging in [false, true] {
                let choice = BackboneChoice::new(kind, flip_averaging);
                let identifier = choice.identifier("0123456789ab");
                assert_eq!(BackboneChoice::from_identifier(&identifier), Some(choice));
            }
        }
        // Identifiers written before other backbones existed.
        assert_eq!(
            BackboneChoice::from_identifier("mobilenet-v2-a9ecad95f7d4"),
            Some(BackboneChoice::default())
        );
        assert_eq!(
            BackboneChoice::new(BackboneKind::MobileNetV2, false).identifier("a9ecad95f7d4"),
            "mobilenet-v2-a9ecad95f7d4"
        );
        assert_eq!(BackboneChoice::from_identifier("resnet-50-0123"), None);
        assert_eq!(BackboneChoice::from_identifier("mobilenet-v2"), None);
    }

    #[test]
    fn two_backbones_parse_name_and_identify_their_features() {
        let pair = BackboneChoice::parse("mobilenet-v2+EfficientNet_Lite2").expect("a pair");
        assert_eq!(pair.kind, BackboneKind::MobileNetV2);
        assert_eq!(pair.appended, Some(BackboneKind::EfficientNetLite2));
        assert_eq!(pair.name(), "mobilenet-v2+efficientnet-lite2");
        assert_eq!(BackboneChoice::parse(&pair.name()).ok(), Some(pair));
        assert_eq!(
            pair.kinds().collect::<Vec<_>>(),
            [BackboneKind::MobileNetV2, BackboneKind::EfficientNetLite2]
        );
        assert_eq!(pair.to_string(), "mobilenet-v2 + efficientnet-lite2");
        for flip_averaging in [false, true] {
            let choice = BackboneChoice {
                flip_averaging,
                ..pair
            };
            let identifier = choice.joined_identifier(&["0123456789ab", "ba9876543210"]);
            assert_eq!(BackboneChoice::from_identifier(&identifier), Some(choice));
        }
        assert_eq!(
            pair.joined_identifier(&["a9ecad95f7d4", "4c409c45acee"]),
            "mobilenet-v2-a9ecad95f7d4+efficientnet-lite2-4c409c45acee"
        );
        // One backbone's joined identifier is its identifier.
        let single = BackboneChoice::default();
        assert_eq!(
            single.joined_identifier(&["a9ecad95f7d4"]),
            single.identifier("a9ecad95f7d4")
        );
        // Mixed flip averaging, the same backbone twice, three backbones: refused.
        assert_eq!(
            BackboneChoice::from_identifier("mobilenet-v2-0123+efficientnet-lite2-flip-0123"),
            None
        );
        assert_eq!(
            BackboneChoice::from_identifier("mobilenet-v2-0123+mobilenet-v2-0123"),
            None
        );
        for refused in [
            "mobilenet-v2+mobilenet-v2",
            "mobilenet-v2+efficientnet-lite1+efficientnet-lite2",
            "mobilenet-v2+resnet-50",
            "mobilenet-v2+",
        ] {
            let error = BackboneChoice::parse(refused).expect_err(refused);
            assert!(error.to_string().contains("efficientnet-lite2"), "{error}");
        }
    }

    #[test]
    fn input_conventions_follow_each_backbone() {
        let check = |kind: BackboneKind, side: u32, normalization: Normalization| {
            assert_eq!(kind.input_size(), side, "{kind}");
            assert_eq!(kind.normalization(), normalization, "{kind}");
            assert_eq!(kind.imagenet_shorter_side(), side + 32, "{kind}");
        };
        check(
            BackboneKind::MobileNetV2,
            224,
            Normalization::ImageNetMeanStd,
        );
        check(
            BackboneKind::EfficientNetLite0,
            224,
            Normalization::Centered127Over128,
        );
        check(
            BackboneKind::EfficientNetLite1,
            240,
            Normalization::Centered127Over128,
        );
        check(
            BackboneKind::EfficientNetLite2,
            260,
            Normalization::Centered127Over128,
        );
        let lite = Normalization::Centered127Over128.lookup_table();
        assert_eq!(lite[0][127], 0.0);
        assert_eq!(lite[1][255], 1.0);
        assert_eq!(lite[2][0], -127.0 / 128.0);
        let imagenet = Normalization::ImageNetMeanStd.lookup_table();
        assert!((imagenet[0][0] - (-0.485 / 0.229)).abs() < 1e-6);
    }
}
