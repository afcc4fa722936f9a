//! Preprocessing of training images: dropping unreadable samples, and augmentation by small
//! random shifts and rotations. (Normalisation is part of the model, see
//! [`crate::nn::Normalize`], so that a saved or exported model applies it too.)

use rand::Rng;

/// A pixel counts as ink from this value on (of 255).
const INK: u8 = 128;
/// The fewest ink pixels a readable digit has: a blank or near-blank image is dropped.
const MIN_INK: usize = 10;
/// The largest share of the image that ink may cover: beyond it the image is noise or
/// inverted (light digits on dark have most pixels "inked").
const MAX_INK_SHARE: f32 = 0.5;

/// Writes an image's pixels into `out` scaled to `[0, 1]`, the range the models take.
pub fn scale(image: &[u8], out: &mut [f32]) {
    debug_assert_eq!(image.len(), out.len());
    for (out, &p) in out.iter_mut().zip(image) {
        *out = f32::from(p) / 255.0;
    }
}

/// Whether an image looks like a digit that can be learnt from: not blank, not noise.
pub fn is_readable(image: &[u8]) -> bool {
    let ink = image.iter().filter(|&&p| p >= INK).count();
    ink >= MIN_INK && (ink as f32) <= MAX_INK_SHARE * image.len() as f32
}

/// The largest shift, in pixels, and rotation, in degrees, that augmentation applies: small
/// enough that every digit stays itself (a 6 must not become a 9).
pub const MAX_SHIFT: f32 = 2.0;
pub const MAX_ROTATION_DEGREES: f32 = 12.0;

/// Moves and turns one `rows x cols` image in place by a random shift of up to
/// [`MAX_SHIFT`] pixels each way and a rotation of up to [`MAX_ROTATION_DEGREES`] about its
/// centre, sampling bilinearly; pixels coming from outside the image are background (0).
pub fn augment(image: &mut [f32], rows: usize, cols: usize, rng: &mut impl Rng) {
    let angle = rng.random_range(-MAX_ROTATION_DEGREES..=MAX_ROTATION_DEGREES).to_radians();
    let dx = rng.random_range(-MAX_SHIFT..=MAX_SHIFT);
    let dy = rng.random_range(-MAX_SHIFT..=MAX_SHIFT);
    let source = image.to_vec();
    let (cy, cx) = ((rows as f32 - 1.0) / 2.0, (cols as f32 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let at = |r: isize, c: isize| {
        if r < 0 || c < 0 || r >= rows as isize || c >= cols as isize {
            0.0
        } else {
            source[r as usize * cols + c as usize]
        }
    };
    for r in 0..rows {
        for c in 0..cols {
            // Inverse map: where in the source does output pixel (r, c) come from?
            let (y, x) = (r as f32 - cy - dy, c as f32 - cx - dx);
            let sy = cos * y - sin * x + cy;
            let sx = sin * y + cos * x + cx;
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            image[r * cols + c] = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn blank_and_noise_images_are_unreadable() {
        let mut digit = vec![0u8; 784];
        digit[300..360].fill(255);
        assert!(is_readable(&digit));
        assert!(!is_readable(&[0u8; 784]));
        assert!(!is_readable(&[3u8; 784]));
        assert!(!is_readable(&[200u8; 784]));
    }

    #[test]
    fn augmentation_moves_ink_a_little_and_keeps_most_of_it() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        let mut image = vec![0.0f32; 784];
        for r in 10..18 {
            for c in 12..16 {
                image[r * 28 + c] = 1.0;
            }
        }
        let before: f32 = image.iter().sum();
        let original = image.clone();
        augment(&mut image, 28, 28, &mut rng);
        let after: f32 = image.iter().sum();
        assert_ne!(image, original);
        // Bilinear resampling of an interior shape keeps its mass up to edge effects.
        assert!((after - before).abs() < 0.1 * before, "{before} -> {after}");
        assert!(image.iter().all(|&p| (0.0..=1.0 + 1e-6).contains(&p)));
    }
}
