//! A precomputed cell index for point → grid lookups that cost a few hundred nanoseconds at
//! national scale.
//!
//! The bounding box of all grids is cut into a raster of cells. A scanline pass records, for the
//! centre of every cell, which grid contains it; cells that no grid border crosses are answered
//! from that alone. For a cell that borders cross, the index keeps the edges that touch it: a
//! point there is located by walking from the cell centre (whose grid is known) to the point and
//! flipping grid membership at every edge crossed. Only the few edges of one cell are examined,
//! whatever the size of the polygons. Degenerate cases (the point on an edge, the walk through a
//! vertex, a centre on a border) answer `Fallback`, and the caller uses the exact method, which
//! also settles border ties.

use geo::MultiPolygon;

/// What the index says about a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellAnswer {
    /// Inside this grid (index into the grid list).
    Grid(u32),
    /// Inside no grid.
    Outside,
    /// The index cannot decide cheaply: use the exact method.
    Fallback,
}

const NONE: u32 = u32::MAX;
const AMBIGUOUS: u32 = u32::MAX - 1;

/// The raster and its edge lists.
#[derive(Debug)]
pub struct CellIndex {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
    inv_w: f64,
    inv_h: f64,
    nx: usize,
    ny: usize,
    /// Grid containing each cell's centre (`NONE`, or `AMBIGUOUS` for a centre on a border).
    centre: Vec<u32>,
    /// CSR offsets into `edges` per cell.
    start: Vec<u32>,
    /// Edges touching each cell, as the index in `pts` of their first vertex (the second is
    /// the next one).
    edges: Vec<u32>,
    /// Ring vertices, ring after ring (each ring closed: last = first).
    pts: Vec<[f64; 2]>,
    /// The grid of the edge starting at each vertex.
    seg_grid: Vec<u32>,
}

/// Distance from (x, y) to the segment p-q in the space scaled by `kx`, `ky` (metres when they
/// are metres per degree of longitude and latitude).
pub fn segment_distance(p: [f64; 2], q: [f64; 2], x: f64, y: f64, kx: f64, ky: f64) -> f64 {
    let (ax, ay) = ((p[0] - x) * kx, (p[1] - y) * ky);
    let (bx, by) = ((q[0] - x) * kx, (q[1] - y) * ky);
    let (vx, vy) = (bx - ax, by - ay);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 {
        (-(ax * vx + ay * vy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((ax + t * vx).powi(2) + (ay + t * vy).powi(2)).sqrt()
}

fn orient(ax: f64, ay: f64, bx: f64, by: f64, cx: f64, cy: f64) -> f64 {
    (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
}

impl CellIndex {
    /// Builds the index over grids given in the order their ids refer to. `cells` is the target
    /// number of raster cells (more cells: fewer edges per cell, more memory).
    pub fn build(grids: &[&MultiPolygon<f64>], cells: usize) -> Option<Self> {
        let mut pts: Vec<[f64; 2]> = Vec::new();
        let mut seg_grid = Vec::new();
        // (first vertex, [x0, y0, x1, y1]) of every non-degenerate edge.
        let mut segs: Vec<(u32, [f64; 4])> = Vec::new();
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for (g, shape) in grids.iter().enumerate() {
            let g = u32::try_from(g).ok()?;
            for poly in &shape.0 {
                for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
                    let first = pts.len();
                    for c in &ring.0 {
                        pts.push([c.x, c.y]);
                        seg_grid.push(g);
                        x0 = x0.min(c.x);
                        y0 = y0.min(c.y);
                        x1 = x1.max(c.x);
                        y1 = y1.max(c.y);
                    }
                    for i in first..pts.len().saturating_sub(1) {
                        let (a, b) = (pts[i], pts[i + 1]);
                        if a != b {
                            segs.push((u32::try_from(i).ok()?, [a[0], a[1], b[0], b[1]]));
                        }
                    }
                }
            }
        }
        if segs.is_empty() || x1 <= x0 || y1 <= y0 {
            return None;
        }
        let (w, h) = (x1 - x0, y1 - y0);
        let cells = cells.clamp(16, 1 << 24) as f64;
        let nx = ((cells * w / h).sqrt().ceil() as usize).clamp(1, 1 << 13);
        let ny = ((cells / nx as f64).ceil() as usize).clamp(1, 1 << 13);
        let (cw, ch) = (w / nx as f64, h / ny as f64);
        let cell_range = |a: f64, b: f64, origin: f64, size: f64, n: usize| {
            let lo = (((a.min(b) - origin) / size).floor().max(0.0) as usize).min(n - 1);
            let hi = (((a.max(b) - origin) / size).floor().max(0.0) as usize).min(n - 1);
            (lo, hi)
        };
        // Edges per cell (conservative: every cell the edge's bounding box covers).
        let mut count = vec![0u32; nx * ny + 1];
        for (_, s) in &segs {
            let (cx0, cx1) = cell_range(s[0], s[2], x0, cw, nx);
            let (cy0, cy1) = cell_range(s[1], s[3], y0, ch, ny);
            for cy in cy0..=cy1 {
                for cx in cx0..=cx1 {
                    count[cy * nx + cx + 1] += 1;
                }
            }
        }
        for i in 1..count.len() {
            count[i] += count[i - 1];
        }
        let start = count.clone();
        let mut fill = count;
        let mut edges = vec![0u32; *start.last()? as usize];
        for &(e, s) in &segs {
            let (cx0, cx1) = cell_range(s[0], s[2], x0, cw, nx);
            let (cy0, cy1) = cell_range(s[1], s[3], y0, ch, ny);
            for cy in cy0..=cy1 {
                for cx in cx0..=cx1 {
                    let c = cy * nx + cx;
                    edges[fill[c] as usize] = e;
                    fill[c] += 1;
                }
            }
        }
        // Scanline along each row's centre: crossings sorted by x decide each centre's grid.
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); ny];
        for (k, (_, s)) in segs.iter().enumerate() {
            let (ry0, ry1) = cell_range(s[1], s[3], y0 - ch / 2.0, ch, ny);
            for r in rows.iter_mut().take(ry1 + 1).skip(ry0) {
                r.push(k as u32);
            }
        }
        let mut centre = vec![NONE; nx * ny];
        let mut parity = vec![false; grids.len()];
        for (ry, row) in rows.iter().enumerate() {
            let yc = y0 + (ry as f64 + 0.5) * ch;
            let mut xs: Vec<(f64, u32)> = row
                .iter()
                .filter_map(|&k| {
                    let (e, s) = segs[k as usize];
                    let (ya, yb) = (s[1], s[3]);
                    // Half-open rule: a vertex on the line counts once.
                    if (ya <= yc && yc < yb) || (yb <= yc && yc < ya) {
                        let t = (yc - ya) / (yb - ya);
                        Some((s[0] + t * (s[2] - s[0]), seg_grid[e as usize]))
                    } else {
                        None
                    }
                })
                .collect();
            xs.sort_by(|a, b| a.0.total_cmp(&b.0));
            parity.iter_mut().for_each(|p| *p = false);
            let mut odd: Vec<u32> = Vec::new();
            let mut k = 0;
            for cx in 0..nx {
                let xc = x0 + (cx as f64 + 0.5) * cw;
                let mut on_border = false;
                while k < xs.len() && xs[k].0 <= xc {
                    if xs[k].0 == xc {
                        on_border = true;
                    }
                    let g = xs[k].1 as usize;
                    parity[g] = !parity[g];
                    if parity[g] {
                        odd.push(g as u32);
                    } else {
                        odd.retain(|&o| o as usize != g);
                    }
                    k += 1;
                }
                centre[ry * nx + cx] = match (on_border, odd.as_slice()) {
                    (true, _) => AMBIGUOUS,
                    (false, []) => NONE,
                    (false, [g]) => *g,
                    (false, _) => AMBIGUOUS,
                };
            }
        }
        drop(segs);
        Some(Self {
            x0,
            y0,
            x1,
            y1,
            inv_w: 1.0 / cw,
            inv_h: 1.0 / ch,
            nx,
            ny,
            centre,
            start,
            edges,
            pts,
            seg_grid,
        })
    }

    /// Locates a point.
    pub fn locate(&self, x: f64, y: f64) -> CellAnswer {
        // Written so that NaN lands outside too.
        if !(x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1) {
            return CellAnswer::Outside;
        }
        let fx = (x - self.x0) * self.inv_w;
        let fy = (y - self.y0) * self.inv_h;
        let cx = (fx as usize).min(self.nx - 1);
        let cy = (fy as usize).min(self.ny - 1);
        let c = cy * self.nx + cx;
        let centre = self.centre[c];
        let (a, b) = (self.start[c] as usize, self.start[c + 1] as usize);
        if a == b {
            return match centre {
                NONE => CellAnswer::Outside,
                AMBIGUOUS => CellAnswer::Fallback,
                g => CellAnswer::Grid(g),
            };
        }
        if centre == AMBIGUOUS {
            return CellAnswer::Fallback;
        }
        // Walk from the centre to the point; flip membership at each crossing.
        let xc = self.x0 + (cx as f64 + 0.5) / self.inv_w;
        let yc = self.y0 + (cy as f64 + 0.5) / self.inv_h;
        // Small fixed buffer: a cell holds edges of very few grids.
        let mut flips: [(u32, u8); 8] = [(NONE, 0); 8];
        let mut nflips = 0;
        for &e in &self.edges[a..b] {
            let (p, q) = (self.pts[e as usize], self.pts[e as usize + 1]);
            let s = [p[0], p[1], q[0], q[1]];
            let o1 = orient(xc, yc, x, y, s[0], s[1]);
            let o2 = orient(xc, yc, x, y, s[2], s[3]);
            if (o1 > 0.0 && o2 > 0.0) || (o1 < 0.0 && o2 < 0.0) {
                continue;
            }
            let o3 = orient(s[0], s[1], s[2], s[3], xc, yc);
            let o4 = orient(s[0], s[1], s[2], s[3], x, y);
            if (o3 > 0.0 && o4 > 0.0) || (o3 < 0.0 && o4 < 0.0) {
                continue;
            }
            if o1 == 0.0 || o2 == 0.0 || o3 == 0.0 || o4 == 0.0 {
                // Touching, collinear or on the edge: let the exact method decide.
                return CellAnswer::Fallback;
            }
            let g = self.seg_grid[e as usize];
            const MAX_FLIPS: usize = 8;
            match flips[..nflips].iter_mut().find(|f| f.0 == g) {
                Some(f) => f.1 ^= 1,
                None if nflips < MAX_FLIPS => {
                    flips[nflips] = (g, 1);
                    nflips += 1;
                }
                None => return CellAnswer::Fallback,
            }
        }
        // Crossing a shared border flips both grids: the centre's grid is left (or not), and
        // at most one other grid may be entered.
        let odd = |g: u32| flips[..nflips].iter().any(|f| f.0 == g && f.1 == 1);
        let mut entered = flips[..nflips]
            .iter()
            .filter(|f| f.1 == 1 && f.0 != centre)
            .map(|f| f.0);
        let (first, second) = (entered.next(), entered.next());
        let still_in_centre = centre != NONE && !odd(centre);
        match (still_in_centre, first, second) {
            (true, None, _) => CellAnswer::Grid(centre),
            (false, None, _) => CellAnswer::Outside,
            (false, Some(g), None) => CellAnswer::Grid(g),
            _ => CellAnswer::Fallback,
        }
    }

    /// Whether no grid reaches into the box `[x0, x1] x [y0, y1]`: every cell it covers is
    /// crossed by no border and has its centre outside every grid. A cheap test that spares
    /// the exact nearest-grid search for points far from any grid.
    pub fn empty_box(&self, x0: f64, y0: f64, x1: f64, y1: f64) -> bool {
        if x1 < self.x0 || y1 < self.y0 || x0 > self.x1 || y0 > self.y1 {
            return true;
        }
        let cx = |x: f64| (((x - self.x0) * self.inv_w).floor().max(0.0) as usize).min(self.nx - 1);
        let cy = |y: f64| (((y - self.y0) * self.inv_h).floor().max(0.0) as usize).min(self.ny - 1);
        (cy(y0)..=cy(y1)).all(|r| {
            (cx(x0)..=cx(x1)).all(|c| {
                let i = r * self.nx + c;
                self.centre[i] == NONE && self.start[i] == self.start[i + 1]
            })
        })
    }

    /// The grid whose border is nearest to (x, y) among the edges in the cells covering the
    /// box `x ± dx, y ± dy`, with the distance in the scaled space `(x * kx, y * ky)` (metres
    /// when `kx`, `ky` are metres per degree). Edges outside the box cannot be nearer than its
    /// half-width, so callers compare the distance against that.
    pub fn nearest_edge(
        &self,
        x: f64,
        y: f64,
        dx: f64,
        dy: f64,
        kx: f64,
        ky: f64,
    ) -> Option<(u32, f64)> {
        if x + dx < self.x0 || y + dy < self.y0 || x - dx > self.x1 || y - dy > self.y1 {
            return None;
        }
        let cx = |v: f64| (((v - self.x0) * self.inv_w).floor().max(0.0) as usize).min(self.nx - 1);
        let cy = |v: f64| (((v - self.y0) * self.inv_h).floor().max(0.0) as usize).min(self.ny - 1);
        let mut best: Option<(u32, f64)> = None;
        for r in cy(y - dy)..=cy(y + dy) {
            for c in cx(x - dx)..=cx(x + dx) {
                let i = r * self.nx + c;
                for &e in &self.edges[self.start[i] as usize..self.start[i + 1] as usize] {
                    let d = segment_distance(
                        self.pts[e as usize],
                        self.pts[e as usize + 1],
                        x,
                        y,
                        kx,
                        ky,
                    );
                    let g = self.seg_grid[e as usize];
                    if best.is_none_or(|(bg, bd)| d < bd || (d == bd && g < bg)) {
                        best = Some((g, d));
                    }
                }
            }
        }
        best
    }

    /// Bytes the index itself occupies (not counting the polygons it was built from).
    pub fn memory_bytes(&self) -> usize {
        self.centre.len() * 4
            + self.start.len() * 4
            + self.edges.len() * 4
            + self.pts.len() * 16
            + self.seg_grid.len() * 4
    }
}
