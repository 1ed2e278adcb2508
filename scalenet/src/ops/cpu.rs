//! CPU kernels on contiguous slices: the convolution as im2col and matrix products (with the
//! `gemm` crate candle itself uses), average pooling, and the fused optimizer updates.
//!
//! Work is split over the batch into one contiguous chunk of images per rayon thread, each with
//! its own scratch buffer; partial weight gradients are summed in chunk order, so a result does not
//! depend on how rayon schedules the chunks (it does depend on the thread count, as PyTorch's).

use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::{Add, AddAssign, Mul};

/// The element types the kernels run on.
pub(crate) trait Real:
    Copy + Send + Sync + Default + PartialOrd + Add<Output = Self> + AddAssign + Mul<Output = Self> + 'static
{
    fn from_f64(value: f64) -> Self;
    fn sqrt(self) -> Self;
    /// This thread's scratch buffers of this type.
    fn scratch() -> &'static std::thread::LocalKey<RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static SCRATCH_F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

impl Real for f32 {
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn scratch() -> &'static std::thread::LocalKey<RefCell<Vec<Vec<Self>>>> {
        &SCRATCH_F32
    }
}

impl Real for f64 {
    fn from_f64(value: f64) -> Self {
        value
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn scratch() -> &'static std::thread::LocalKey<RefCell<Vec<Vec<Self>>>> {
        &SCRATCH_F64
    }
}

/// Runs `f` with `N` scratch buffers of at least the given lengths, reused across calls on this
/// thread: the convolution's im2col matrices and products are rewritten whole on every use, so
/// allocating and zeroing them per call (megabytes per step) is wasted work. Their contents on
/// entry are unspecified values of `T`.
fn with_scratch<T: Real, R, const N: usize>(lens: [usize; N], f: impl FnOnce([&mut [T]; N]) -> R) -> R {
    let mut buffers: Vec<Vec<T>> = T::scratch().with(|pool| std::mem::take(&mut *pool.borrow_mut()));
    buffers.resize_with(buffers.len().max(N), Vec::new);
    for (buffer, &len) in buffers.iter_mut().zip(&lens) {
        if buffer.len() < len {
            buffer.resize(len, T::default());
        }
    }
    let result = {
        let mut slices = buffers.iter_mut().zip(lens).map(|(buffer, len)| &mut buffer[..len]);
        f(std::array::from_fn(|_| slices.next().expect("one buffer per length")))
    };
    // Taken out of the pool above, so a nested call on this thread got buffers of its own.
    T::scratch().with(|pool| *pool.borrow_mut() = buffers);
    result
}

/// Elements per task of the element-wise kernels: below it, splitting costs more than it saves.
const GRAIN: usize = 1 << 14;

/// `out[i] = f(xs[i], ys[i])`, split over rayon's threads in runs of [`GRAIN`].
fn zip_map<T: Real>(xs: &[T], ys: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::default(); xs.len()];
    out.par_chunks_mut(GRAIN).zip(xs.par_chunks(GRAIN)).zip(ys.par_chunks(GRAIN)).for_each(|((out, xs), ys)| {
        for ((o, x), y) in out.iter_mut().zip(xs).zip(ys) {
            *o = f(*x, *y);
        }
    });
    out
}

/// `max(x, 0)`, keeping NaN visible (a diverged run must not look finite after a ReLU).
pub(crate) fn relu_forward<T: Real>(xs: &[T]) -> Vec<T> {
    zip_map(xs, xs, |x, _| if x < T::default() { T::default() } else { x })
}

/// The gradient through a ReLU whose output was `ys`: `grad` where `ys > 0`, else 0.
pub(crate) fn relu_backward<T: Real>(ys: &[T], grad: &[T]) -> Vec<T> {
    zip_map(ys, grad, |y, g| if y > T::default() { g } else { T::default() })
}

/// `a * xs + b * ys`.
pub(crate) fn weighted_sum<T: Real>(xs: &[T], a: T, ys: &[T], b: T) -> Vec<T> {
    zip_map(xs, ys, |x, y| a * x + b * y)
}

/// Average pooling of `planes` planes of `height x width` by non-overlapping `k x k` windows
/// (stride = kernel; rows and columns beyond the last whole window are not seen).
pub(crate) fn avg_pool_forward<T: Real>(xs: &[T], planes: usize, height: usize, width: usize, k: usize) -> Vec<T> {
    let (oh, ow) = (height / k, width / k);
    let mut out = vec![T::default(); planes * oh * ow];
    if out.is_empty() {
        return out;
    }
    let weight = T::from_f64(1.0 / (k * k) as f64);
    let planes_per_task = GRAIN.div_ceil(height * width).max(1);
    out.par_chunks_mut(planes_per_task * oh * ow).enumerate().for_each(|(task, pooled)| {
        for (i, pooled) in pooled.chunks_exact_mut(oh * ow).enumerate() {
            let plane = &xs[(task * planes_per_task + i) * height * width..][..height * width];
            for (oy, pooled_row) in pooled.chunks_exact_mut(ow).enumerate() {
                for dy in 0..k {
                    let line = &plane[(oy * k + dy) * width..][..ow * k];
                    for (value, window) in pooled_row.iter_mut().zip(line.chunks_exact(k)) {
                        for x in window {
                            *value += *x;
                        }
                    }
                }
                for value in pooled_row.iter_mut() {
                    *value = *value * weight;
                }
            }
        }
    });
    out
}

/// The gradient of [`avg_pool_forward`]: each window's gradient over `k * k`, copied over the
/// window; zero on the rows and columns the pooling did not see.
pub(crate) fn avg_pool_backward<T: Real>(grad: &[T], planes: usize, height: usize, width: usize, k: usize) -> Vec<T> {
    let (oh, ow) = (height / k, width / k);
    let mut out = vec![T::default(); planes * height * width];
    if out.is_empty() || oh * ow == 0 {
        return out;
    }
    let weight = T::from_f64(1.0 / (k * k) as f64);
    let planes_per_task = GRAIN.div_ceil(height * width).max(1);
    out.par_chunks_mut(planes_per_task * height * width).enumerate().for_each(|(task, planes_out)| {
        for (i, plane) in planes_out.chunks_exact_mut(height * width).enumerate() {
            let pooled = &grad[(task * planes_per_task + i) * oh * ow..][..oh * ow];
            for (iy, line) in plane.chunks_exact_mut(width).enumerate().take(oh * k) {
                let pooled_row = &pooled[iy / k * ow..][..ow];
                for (window, value) in line.chunks_exact_mut(k).zip(pooled_row) {
                    window.fill(*value * weight);
                }
            }
        }
    });
    out
}

/// `scale * xs W^T + bias`: `xs` is `rows x inputs`, `weight` `outputs x inputs`.
pub(crate) fn linear_forward<T: Real>(
    xs: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    rows: usize,
    inputs: usize,
    outputs: usize,
    scale: T,
) -> Vec<T> {
    let mut out = vec![T::default(); rows * outputs];
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(outputs) {
            row.copy_from_slice(bias);
        }
    }
    let parallelism = Parallelism::Rayon(rayon::current_num_threads());
    let (lhs, rhs) = (View::rows(xs, inputs), View::transposed(weight, inputs));
    matmul(rows, outputs, inputs, &mut out, lhs, rhs, scale, bias.is_some(), parallelism);
    out
}

/// The gradients of [`linear_forward`] given `grad` (`rows x outputs`): the input's when
/// `input_gradient`, the weight's, and the bias's when `bias`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_backward<T: Real>(
    xs: &[T],
    weight: &[T],
    grad: &[T],
    rows: usize,
    inputs: usize,
    outputs: usize,
    scale: T,
    input_gradient: bool,
    bias: bool,
) -> (Option<Vec<T>>, Vec<T>, Option<Vec<T>>) {
    let parallelism = Parallelism::Rayon(rayon::current_num_threads());
    let grad_xs = input_gradient.then(|| {
        let mut out = vec![T::default(); rows * inputs];
        let (lhs, rhs) = (View::rows(grad, outputs), View::rows(weight, inputs));
        matmul(rows, inputs, outputs, &mut out, lhs, rhs, scale, false, parallelism);
        out
    });
    let mut grad_weight = vec![T::default(); outputs * inputs];
    let (lhs, rhs) = (View::transposed(grad, outputs), View::rows(xs, inputs));
    matmul(outputs, inputs, rows, &mut grad_weight, lhs, rhs, scale, false, parallelism);
    let grad_bias = bias.then(|| {
        let mut sums = vec![T::default(); outputs];
        for row in grad.chunks_exact(outputs) {
            for (sum, value) in sums.iter_mut().zip(row) {
                *sum += *value;
            }
        }
        sums
    });
    (grad_xs, grad_weight, grad_bias)
}

/// A row-major matrix view: element `(i, j)` is at `offset + i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
struct View<'a, T> {
    data: &'a [T],
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> View<'a, T> {
    fn rows(data: &'a [T], row_stride: usize) -> Self {
        View { data, row_stride, col_stride: 1 }
    }

    /// The transpose of the row-major matrix with `row_stride`.
    fn transposed(data: &'a [T], row_stride: usize) -> Self {
        View { data, row_stride: 1, col_stride: row_stride }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst = scale * lhs * rhs`, or `dst += scale * lhs * rhs` when `accumulate`; `dst` is `m x n`
/// row-major with row stride `n`, `lhs` is `m x k`, `rhs` is `k x n`.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    lhs: View<T>,
    rhs: View<T>,
    scale: T,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n && lhs.fits(m, k) && rhs.fits(k, n), "matmul: operand too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::default());
        }
        return;
    }
    // SAFETY: the assert above keeps every index gemm reads or writes inside the slices, and
    // `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::from_f64(1.0),
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// How a batch is split over the rayon threads: `chunks` contiguous runs of `per_chunk` images
/// (the last may be shorter), and the parallelism each chunk's matrix products may use (the
/// threads left over when the batch is smaller than the pool).
#[derive(Clone, Copy, Debug)]
struct Split {
    per_chunk: usize,
    chunks: usize,
    parallelism: Parallelism,
}

impl Split {
    fn new(batch: usize) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let per_chunk = batch.div_ceil(threads).max(1);
        let chunks = batch.div_ceil(per_chunk).max(1);
        let spare = threads / chunks;
        let parallelism = if spare > 1 { Parallelism::Rayon(spare) } else { Parallelism::None };
        Split { per_chunk, chunks, parallelism }
    }
}

/// The geometry of a 2-d convolution (dilation 1, one group, square kernel) on NCHW tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The dimensions of the input, the kernel and the output, NCHW.
    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    pub fn input_dims(&self) -> (usize, usize, usize, usize) {
        (self.batch, self.in_channels, self.height, self.width)
    }

    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    pub fn kernel_dims(&self) -> (usize, usize, usize, usize) {
        (self.out_channels, self.in_channels, self.kernel, self.kernel)
    }

    pub fn output_dims(&self) -> (usize, usize, usize, usize) {
        (self.batch, self.out_channels, self.out_height(), self.out_width())
    }

    /// Rows of the im2col matrix: one per kernel tap `(channel, ky, kx)`, the kernel's layout.
    fn taps(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// Columns of the im2col matrix: one per output position.
    fn positions(&self) -> usize {
        self.out_height() * self.out_width()
    }

    fn image_in(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    fn image_out(&self) -> usize {
        self.out_channels * self.positions()
    }

    /// Images per matrix product: enough positions side by side (about [`GROUP_POSITIONS`]) that
    /// packing the operands is paid over a long product, at most `limit`.
    fn group(&self, limit: usize) -> usize {
        GROUP_POSITIONS.div_ceil(self.positions().max(1)).clamp(1, limit.max(1))
    }

    /// For tap offset `k` along an axis of `size` inputs and `outs` outputs, the range of output
    /// indices whose input `o * stride + k - padding` lies inside the image.
    fn valid_outputs(&self, k: usize, size: usize, outs: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.stride, self.padding);
        let first = if k >= p { 0 } else { (p - k).div_ceil(s) };
        // o * s + k - p <= size - 1  <=>  o <= (size - 1 + p - k) / s
        let last = if size + p > k { ((size - 1 + p - k) / s + 1).min(outs) } else { 0 };
        first.min(last)..last
    }

    /// For a stride-1 convolution whose output rows are as long as its input rows ("same"
    /// padding, or a 1x1 kernel), the outputs of tap `(ky, kx)` from the first valid one
    /// (`rows.start`, `columns.start`) read consecutive inputs from the index returned, as if the
    /// plane were one long row. `None` for other convolutions, or when no output is valid.
    fn flat_source(
        &self,
        ky: usize,
        kx: usize,
        rows: &std::ops::Range<usize>,
        columns: &std::ops::Range<usize>,
    ) -> Option<usize> {
        if self.stride != 1 || self.out_width() != self.width || rows.is_empty() || columns.is_empty() {
            return None;
        }
        Some((rows.start + ky - self.padding) * self.width + columns.start + kx - self.padding)
    }

    /// Every kernel offset `(ky, kx)` with the output rows and columns whose window reads inside
    /// the input there, and [`Self::flat_source`]: what the taps of every channel at that offset
    /// share (computed once per offset rather than once per tap).
    fn offsets(&self) -> impl Iterator<Item = KernelOffset> + '_ {
        let (oh, ow, k) = (self.out_height(), self.out_width(), self.kernel);
        (0..k * k).map(move |offset| {
            let (ky, kx) = (offset / k, offset % k);
            let rows = self.valid_outputs(ky, self.height, oh);
            let columns = self.valid_outputs(kx, self.width, ow);
            let source = self.flat_source(ky, kx, &rows, &columns);
            KernelOffset { offset, ky, kx, rows, columns, source }
        })
    }

    /// Writes the im2col matrix of one image (`taps x positions`) into `cols`, whose rows are
    /// `row_stride` apart (several images side by side share one matrix).
    fn im2col<T: Real>(&self, image: &[T], cols: &mut [T], row_stride: usize) {
        let (oh, ow, s) = (self.out_height(), self.out_width(), self.stride);
        let (positions, plane_len, k2) = (oh * ow, self.height * self.width, self.kernel * self.kernel);
        for KernelOffset { offset, ky, kx, rows, columns, source } in self.offsets() {
            for (channel, plane) in image.chunks_exact(plane_len).enumerate() {
                let row = &mut cols[(channel * k2 + offset) * row_stride..][..positions];
                if let Some(source) = source {
                    // Output and input rows are equally long, so the tap's rows are one
                    // contiguous run of the plane, shifted: one copy, then zeros where the window
                    // hangs over the padding (values of the neighbouring row landed there).
                    let (lo, hi) = (rows.start * ow + columns.start, (rows.end - 1) * ow + columns.end);
                    row[..lo].fill(T::default());
                    row[hi..].fill(T::default());
                    row[lo..hi].copy_from_slice(&plane[source..source + hi - lo]);
                    zero_outside_columns(row, ow, &rows, &columns);
                    continue;
                }
                for (oy, out_row) in row.chunks_exact_mut(ow).enumerate() {
                    if !rows.contains(&oy) || columns.is_empty() {
                        out_row.fill(T::default());
                        continue;
                    }
                    let iy = oy * s + ky - self.padding;
                    let line = &plane[iy * self.width..][..self.width];
                    out_row[..columns.start].fill(T::default());
                    out_row[columns.end..].fill(T::default());
                    let ix0 = columns.start * s + kx - self.padding;
                    if s == 1 {
                        copy_short(&mut out_row[columns.clone()], &line[ix0..ix0 + columns.len()]);
                    } else {
                        for (value, input) in out_row[columns.clone()].iter_mut().zip(line[ix0..].iter().step_by(s)) {
                            *value = *input;
                        }
                    }
                }
            }
        }
    }

    /// Adds the im2col-shaped `cols` (rows `row_stride` apart) back onto the image positions they
    /// were read from. Entries of `cols` that fall on the padding may be zeroed.
    fn col2im_add<T: Real>(&self, cols: &mut [T], row_stride: usize, image: &mut [T]) {
        let (oh, ow, s) = (self.out_height(), self.out_width(), self.stride);
        let (positions, plane_len, k2) = (oh * ow, self.height * self.width, self.kernel * self.kernel);
        for KernelOffset { offset, ky, kx, rows, columns, source } in self.offsets() {
            if columns.is_empty() || rows.is_empty() {
                continue;
            }
            for (channel, plane) in image.chunks_exact_mut(plane_len).enumerate() {
                let row = &mut cols[(channel * k2 + offset) * row_stride..][..positions];
                if let Some(source) = source {
                    // As in `im2col`: one shifted run, once the entries over the padding are zero.
                    zero_outside_columns(row, ow, &rows, &columns);
                    let (lo, hi) = (rows.start * ow + columns.start, (rows.end - 1) * ow + columns.end);
                    for (input, value) in plane[source..source + hi - lo].iter_mut().zip(&row[lo..hi]) {
                        *input += *value;
                    }
                    continue;
                }
                for oy in rows.clone() {
                    let iy = oy * s + ky - self.padding;
                    let line = &mut plane[iy * self.width..][..self.width];
                    let ix0 = columns.start * s + kx - self.padding;
                    let values = &row[oy * ow..][columns.clone()];
                    if s == 1 {
                        for (input, value) in line[ix0..ix0 + columns.len()].iter_mut().zip(values) {
                            *input += *value;
                        }
                    } else {
                        for (input, value) in line[ix0..].iter_mut().step_by(s).zip(values) {
                            *input += *value;
                        }
                    }
                }
            }
        }
    }
}

/// One kernel offset of a convolution, as [`ConvGeometry::offsets`] gives it.
struct KernelOffset {
    /// `ky * kernel + kx`: the tap of channel `c` at this offset is `c * kernel² + offset`.
    offset: usize,
    ky: usize,
    kx: usize,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    source: Option<usize>,
}

/// Zeros the entries of `row` (an `ow`-wide output map) in the valid `rows` but outside the
/// valid `columns`: where a tap's window hangs over the left or right padding.
fn zero_outside_columns<T: Real>(
    row: &mut [T],
    ow: usize,
    rows: &std::ops::Range<usize>,
    columns: &std::ops::Range<usize>,
) {
    if columns.start == 0 && columns.end == ow {
        return;
    }
    for out_row in row[rows.start * ow..rows.end * ow].chunks_exact_mut(ow) {
        out_row[..columns.start].fill(T::default());
        out_row[columns.end..].fill(T::default());
    }
}

/// `dst.copy_from_slice(src)` for rows of a few dozen elements, as inline vector moves: im2col
/// copies millions of such rows per training step, and a `memcpy` call each costs more than the
/// copy.
#[inline]
fn copy_short<T: Real>(dst: &mut [T], src: &[T]) {
    let mut dst_chunks = dst.chunks_exact_mut(8);
    let mut src_chunks = src.chunks_exact(8);
    for (d, s) in (&mut dst_chunks).zip(&mut src_chunks) {
        let s: &[T; 8] = s.try_into().expect("chunks of 8");
        let d: &mut [T; 8] = d.try_into().expect("chunks of 8");
        *d = *s;
    }
    for (d, s) in dst_chunks.into_remainder().iter_mut().zip(src_chunks.remainder()) {
        *d = *s;
    }
}

/// Output positions per matrix product of the convolution: LeNet's layers have 6 to 16 channels
/// and 144 to 1024 positions per image, and a product per image spends as long packing its
/// operands as multiplying them.
const GROUP_POSITIONS: usize = 4096;

/// The im2col matrix of images `first..first + count` side by side: `taps x (count positions)`.
fn group_cols<T: Real>(g: &ConvGeometry, xs: &[T], first: usize, count: usize, cols: &mut [T]) {
    let (image_in, positions) = (g.image_in(), g.positions());
    for i in 0..count {
        let image = &xs[(first + i) * image_in..][..image_in];
        g.im2col(image, &mut cols[i * positions..], count * positions);
    }
}

/// `scale * conv2d(xs, kernel) + bias`: `xs` is `(batch, in, h, w)`, `kernel` `(out, in, k, k)`,
/// `bias` `(out,)`, all contiguous; the result is `(batch, out, oh, ow)`, contiguous.
pub(crate) fn conv2d_forward<T: Real>(
    geometry: &ConvGeometry,
    xs: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    scale: T,
) -> Vec<T> {
    let g = *geometry;
    let (taps, positions, image_out) = (g.taps(), g.positions(), g.image_out());
    let mut out = vec![T::default(); g.batch * image_out];
    if out.is_empty() {
        return out;
    }
    let split = Split::new(g.batch);
    let group = g.group(split.per_chunk);
    out.par_chunks_mut(split.per_chunk * image_out).enumerate().for_each(|(chunk, out_chunk)| {
        let lens = [taps * group * positions, g.out_channels * group * positions];
        with_scratch(lens, |[cols, products]: [&mut [T]; 2]| {
            let first = chunk * split.per_chunk;
            for (index, out_group) in out_chunk.chunks_mut(group * image_out).enumerate() {
                let count = out_group.len() / image_out;
                let columns = count * positions;
                group_cols(&g, xs, first + index * group, count, cols);
                // (out x count positions) = kernel (out x taps) * cols (taps x count positions)
                let (lhs, rhs) = (View::rows(kernel, taps), View::rows(&cols[..taps * columns], columns));
                matmul(g.out_channels, columns, taps, products, lhs, rhs, scale, false, split.parallelism);
                for (i, out_image) in out_group.chunks_exact_mut(image_out).enumerate() {
                    for (channel, out_channel) in out_image.chunks_exact_mut(positions).enumerate() {
                        let product = &products[channel * columns + i * positions..][..positions];
                        match bias {
                            Some(bias) => {
                                for (o, p) in out_channel.iter_mut().zip(product) {
                                    *o = *p + bias[channel];
                                }
                            }
                            None => out_channel.copy_from_slice(product),
                        }
                    }
                }
            }
        });
    });
    out
}

/// The gradients of `scale * conv2d(xs, kernel) + bias` given the gradient `grad` of its output
/// (contiguous, `(batch, out, oh, ow)`): the input's when `input_gradient`, the kernel's, and
/// the bias's (`(out,)`, the sum of `grad` over the batch and the positions).
pub(crate) fn conv2d_backward<T: Real>(
    geometry: &ConvGeometry,
    xs: &[T],
    kernel: &[T],
    grad: &[T],
    scale: T,
    input_gradient: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let g = *geometry;
    let (taps, positions, image_in, image_out) = (g.taps(), g.positions(), g.image_in(), g.image_out());
    let kernel_len = g.out_channels * taps;
    let split = Split::new(g.batch);
    let group = g.group(split.per_chunk);
    let mut grad_xs = input_gradient.then(|| vec![T::default(); g.batch * image_in]);
    let grad_chunks: Vec<Option<&mut [T]>> = match grad_xs.as_mut() {
        Some(all) if !all.is_empty() => all.chunks_mut(split.per_chunk * image_in).map(Some).collect(),
        _ => (0..split.chunks).map(|_| None).collect(),
    };
    let partials: Vec<(Vec<T>, Vec<T>)> = grad_chunks
        .into_par_iter()
        .enumerate()
        .map(|(chunk, mut grad_chunk)| {
            let mut grad_kernel = vec![T::default(); kernel_len];
            let mut grad_bias = vec![T::default(); g.out_channels];
            let lens = [taps * group * positions, g.out_channels * group * positions];
            with_scratch(lens, |[cols, grad_group]: [&mut [T]; 2]| {
                let first = chunk * split.per_chunk;
                let end = (first + split.per_chunk).min(g.batch);
                for start in (first..end).step_by(group) {
                    let count = group.min(end - start);
                    let columns = count * positions;
                    // The group's output gradient as one (out x count positions) matrix.
                    for i in 0..count {
                        let grad_image = &grad[(start + i) * image_out..][..image_out];
                        for (channel, values) in grad_image.chunks_exact(positions).enumerate() {
                            grad_group[channel * columns + i * positions..][..positions].copy_from_slice(values);
                            grad_bias[channel] += values.iter().fold(T::default(), |acc, value| acc + *value);
                        }
                    }
                    let grad_matrix = View::rows(&grad_group[..g.out_channels * columns], columns);
                    group_cols(&g, xs, start, count, cols);
                    // dK += scale * dY (out x columns) * cols^T (columns x taps)
                    let cols_t = View::transposed(&cols[..taps * columns], columns);
                    matmul(
                        g.out_channels,
                        taps,
                        columns,
                        &mut grad_kernel,
                        grad_matrix,
                        cols_t,
                        scale,
                        true,
                        split.parallelism,
                    );
                    if let Some(grad_chunk) = grad_chunk.as_deref_mut() {
                        // dcols = scale * K^T (taps x out) * dY (out x columns), added back onto the images.
                        let kernel_t = View::transposed(kernel, taps);
                        matmul(
                            taps,
                            columns,
                            g.out_channels,
                            cols,
                            kernel_t,
                            grad_matrix,
                            scale,
                            false,
                            split.parallelism,
                        );
                        for i in 0..count {
                            let grad_image_in = &mut grad_chunk[(start + i - first) * image_in..][..image_in];
                            g.col2im_add(&mut cols[i * positions..], columns, grad_image_in);
                        }
                    }
                }
            });
            (grad_kernel, grad_bias)
        })
        .collect();
    let mut grad_kernel = vec![T::default(); kernel_len];
    let mut grad_bias = vec![T::default(); g.out_channels];
    for (partial_kernel, partial_bias) in &partials {
        for (total, value) in grad_kernel.iter_mut().zip(partial_kernel) {
            *total += *value;
        }
        for (total, value) in grad_bias.iter_mut().zip(partial_bias) {
            *total += *value;
        }
    }
    (grad_xs, grad_kernel, grad_bias)
}

/// Elements per task of the optimizer updates.
const UPDATE_GRAIN: usize = 1 << 15;

/// One SGD step in one pass: `g = grad + weight_decay * theta`, `buf = momentum * buf + g` (when
/// there is a buffer), `theta -= lr * (buf or g)`, PyTorch's `torch.optim.SGD` without dampening.
pub(crate) fn sgd_update<T: Real>(
    theta: &mut [T],
    grad: &[T],
    buffer: Option<&mut [T]>,
    lr: T,
    momentum: T,
    weight_decay: T,
) {
    let minus_lr = T::default() + T::from_f64(-1.0) * lr;
    match buffer {
        None => theta.par_chunks_mut(UPDATE_GRAIN).zip(grad.par_chunks(UPDATE_GRAIN)).for_each(|(theta, grad)| {
            for (t, g) in theta.iter_mut().zip(grad) {
                *t += minus_lr * (*g + weight_decay * *t);
            }
        }),
        Some(buffer) => theta
            .par_chunks_mut(UPDATE_GRAIN)
            .zip(buffer.par_chunks_mut(UPDATE_GRAIN))
            .zip(grad.par_chunks(UPDATE_GRAIN))
            .for_each(|((theta, buffer), grad)| {
                for ((t, b), g) in theta.iter_mut().zip(buffer.iter_mut()).zip(grad) {
                    *b = momentum * *b + (*g + weight_decay * *t);
                    *t += minus_lr * *b;
                }
            }),
    }
}

/// The constants of one AdamW step (decoupled weight decay, bias-corrected moments).
#[derive(Clone, Copy)]
pub(crate) struct AdamStep<T> {
    pub lr: T,
    pub beta1: T,
    pub beta2: T,
    pub eps: T,
    /// `1 - lr * weight_decay`.
    pub decay: T,
    /// `1 / (1 - beta1^t)` and `1 / (1 - beta2^t)`.
    pub correction1: T,
    pub correction2: T,
}

/// One AdamW step in one pass over `theta`, its gradient and both moments:
/// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `theta = theta (1 - lr wd) - lr (m c1) / (sqrt(v c2) + eps)`, as candle-nn's and PyTorch's AdamW.
pub(crate) fn adamw_update<T: Real + std::ops::Div<Output = T>>(
    theta: &mut [T],
    grad: &[T],
    first: &mut [T],
    second: &mut [T],
    step: AdamStep<T>,
) {
    let one = T::from_f64(1.0);
    let minus = T::from_f64(-1.0);
    let (one_minus_beta1, one_minus_beta2) = (one + minus * step.beta1, one + minus * step.beta2);
    theta
        .par_chunks_mut(UPDATE_GRAIN)
        .zip(first.par_chunks_mut(UPDATE_GRAIN))
        .zip(second.par_chunks_mut(UPDATE_GRAIN))
        .zip(grad.par_chunks(UPDATE_GRAIN))
        .for_each(|(((theta, first), second), grad)| {
            for (((t, m), v), g) in theta.iter_mut().zip(first.iter_mut()).zip(second.iter_mut()).zip(grad) {
                *m = step.beta1 * *m + one_minus_beta1 * *g;
                *v = step.beta2 * *v + one_minus_beta2 * *g * *g;
                let adjusted = (*m * step.correction1) / ((*v * step.correction2).sqrt() + step.eps);
                *t = *t * step.decay + minus * step.lr * adjusted;
            }
        });
}
