;; mandelbrot.wat: renders the Mandelbrot set as a greyscale PGM image, a dispy ABI v1
;; WebAssembly payload.
;;
;; Use with the split rule `range:0..HEIGHT:ROWS`, e.g. `range:0..1024:16`: each chunk's input is
;; 16 bytes, two little-endian u64 values START and END, and the chunk renders image rows
;; START..END (END excluded). The chunk that starts at row 0 first emits the binary PGM header
;; "P5\n{WIDTH} {HEIGHT}\n255\n", so the outputs of all chunks concatenated in order are a valid
;; PGM file. The rendering is deterministic: only IEEE f64 add, multiply and divide, which
;; WebAssembly defines exactly.
;;
;; Arguments (ASCII): "WIDTH HEIGHT MAX_ITER", three decimal numbers from 1 to 1000000 separated
;; by spaces; empty arguments mean "1024 1024 256".
;;
;;   dispy-submit run --payload examples/mandelbrot.wat --input /dev/null \
;;       --split range:0..1024:16 --args "1024 1024 256" --output mandelbrot.pgm
;;
;; Pixel (x, y) samples c = cx + i*cy with cx = -2.0 + (3.0 * x) / WIDTH and
;; cy = -1.5 + (3.0 * y) / HEIGHT, so the image covers [-2.0, 1.0) x [-1.5, 1.5). It iterates
;; z = z*z + c from z = 0 until |z|^2 > 4.0 or MAX_ITER iterations, and the grey level is
;; 255 - iterations * 255 / MAX_ITER (integer division): points inside the set are black.
;;
;; Return codes: 1 = bad arguments (from dispy_setup), 2 = dispy_setup did not run, 3 = the input
;; is not 16 bytes, 4 = START > END or END > HEIGHT.
(module
  ;; The only host function: append `len` bytes at `ptr` to the chunk's output.
  (import "dispy" "emit" (func $emit (param $ptr i32) (param $len i32)))

  ;; One page to start with; dispy_alloc grows it to fit the row buffer.
  (memory (export "memory") 1)

  ;; Static data, below the heap: the header's fixed tail at 32, the header being built at 64
  ;; (at most "P5\n1000000 1000000\n255\n", 23 bytes).
  (data (i32.const 32) "\n255\n")
  (data (i32.const 64) "P5\n")

  ;; Image parameters, set once per worker by dispy_setup.
  (global $width (mut i32) (i32.const 0))
  (global $height (mut i32) (i32.const 0))
  (global $max_iter (mut i32) (i32.const 0))
  (global $ready (mut i32) (i32.const 0))
  ;; The value read by $parse_number.
  (global $number (mut i32) (i32.const 0))

  ;; ---- Bump allocator -----------------------------------------------------------------------
  ;; $heap is the first free byte; everything below 1024 is static data. The host allocates the
  ;; job's arguments once per worker, then each chunk's input right before calling dispy_run, so
  ;; the input is always the newest allocation and everything from the input pointer upwards
  ;; belongs to the current chunk (the input, then the row buffer). dispy_run ends by moving $heap
  ;; back to the input pointer, which frees both while the arguments, allocated earlier and so
  ;; below it, stay intact.
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "dispy_alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i64) (local $have i64)
    ;; Round up to 8 bytes so allocations can hold i64 and f64 values.
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    ;; Unsigned wrap-around: the request cannot fit a 4 GiB memory.
    (if (i32.lt_u (local.get $ptr) (global.get $heap)) (then (unreachable)))
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then (unreachable)))
    ;; Pages needed to hold [0, end), computed in 64 bits so 4 GiB does not overflow.
    (local.set $need
      (i64.shr_u (i64.add (i64.extend_i32_u (local.get $end)) (i64.const 65535)) (i64.const 16)))
    (local.set $have (i64.extend_i32_u (memory.size)))
    (if (i64.gt_u (local.get $need) (local.get $have))
      (then
        (if (i32.eq (memory.grow (i32.wrap_i64 (i64.sub (local.get $need) (local.get $have))))
                    (i32.const -1))
          (then (unreachable)))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  ;; ---- Argument parsing ---------------------------------------------------------------------
  ;; Returns the position of the first byte in [$p, $end) that is not ASCII whitespace.
  (func $skip_spaces (param $p i32) (param $end i32) (result i32)
    (local $c i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        ;; Space, or \t \n \v \f \r (9 to 13).
        (br_if $done
          (i32.and (i32.ne (local.get $c) (i32.const 32))
                   (i32.ge_u (i32.sub (local.get $c) (i32.const 9)) (i32.const 5))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; Reads a decimal number from 1 to 1000000 at $p into $number and returns the position after
  ;; it, or -1 when there is no digit or the number is out of range.
  (func $parse_number (param $p i32) (param $end i32) (result i32)
    (local $start i32) (local $digit i32) (local $n i32)
    (local.set $start (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $digit (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $done (i32.ge_u (local.get $digit) (i32.const 10)))
        (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (local.get $digit)))
        ;; Checked on every digit, so $n * 10 + 9 never overflows.
        (if (i32.gt_u (local.get $n) (i32.const 1000000)) (then (return (i32.const -1))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (if (i32.eq (local.get $p) (local.get $start)) (then (return (i32.const -1))))
    (if (i32.eqz (local.get $n)) (then (return (i32.const -1))))
    (global.set $number (local.get $n))
    (local.get $p))

  ;; Parses "WIDTH HEIGHT MAX_ITER" into the globals once per worker; 0 = success, 1 = bad args.
  (func (export "dispy_setup") (param $args i32) (param $args_len i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $end (i32.add (local.get $args) (local.get $args_len)))
    (local.set $p (call $skip_spaces (local.get $args) (local.get $end)))
    (if (i32.eq (local.get $p) (local.get $end))
      (then
        ;; Empty (or blank) arguments: the defaults.
        (global.set $width (i32.const 1024))
        (global.set $height (i32.const 1024))
        (global.set $max_iter (i32.const 256))
        (global.set $ready (i32.const 1))
        (return (i32.const 0))))
    (local.set $p (call $parse_number (local.get $p) (local.get $end)))
    (if (i32.eq (local.get $p) (i32.const -1)) (then (return (i32.const 1))))
    (global.set $width (global.get $number))
    (local.set $p
      (call $parse_number (call $skip_spaces (local.get $p) (local.get $end)) (local.get $end)))
    (if (i32.eq (local.get $p) (i32.const -1)) (then (return (i32.const 1))))
    (global.set $height (global.get $number))
    (local.set $p
      (call $parse_number (call $skip_spaces (local.get $p) (local.get $end)) (local.get $end)))
    (if (i32.eq (local.get $p) (i32.const -1)) (then (return (i32.const 1))))
    (global.set $max_iter (global.get $number))
    ;; Nothing but whitespace may follow.
    (if (i32.ne (call $skip_spaces (local.get $p) (local.get $end)) (local.get $end))
      (then (return (i32.const 1))))
    (global.set $ready (i32.const 1))
    (i32.const 0))

  ;; ---- Rendering ----------------------------------------------------------------------------
  ;; Writes $n in decimal at $p and returns the position after the last digit.
  (func $write_number (param $p i32) (param $n i32) (result i32)
    (local $end i32) (local $t i32)
    ;; Count the digits to find the end, then write them backwards.
    (local.set $end (i32.add (local.get $p) (i32.const 1)))
    (local.set $t (local.get $n))
    (block $counted
      (loop $count
        (br_if $counted (i32.lt_u (local.get $t) (i32.const 10)))
        (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $count)))
    (local.set $t (local.get $end))
    (loop $digit
      (local.set $t (i32.sub (local.get $t) (i32.const 1)))
      (i32.store8 (local.get $t) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.gt_u (local.get $t) (local.get $p))))
    (local.get $end))

  ;; Emits "P5\n{WIDTH} {HEIGHT}\n255\n", built after the "P5\n" already at 64.
  (func $emit_header
    (local $p i32)
    (local.set $p (call $write_number (i32.const 67) (global.get $width)))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (call $write_number (i32.add (local.get $p) (i32.const 1)) (global.get $height)))
    (memory.copy (local.get $p) (i32.const 32) (i32.const 5))
    (call $emit (i32.const 64) (i32.sub (i32.add (local.get $p) (i32.const 5)) (i32.const 64))))

  ;; Writes the WIDTH grey levels of row $y to $buf.
  (func $render_row (param $y i32) (param $buf i32)
    (local $x i32) (local $i i32)
    (local $cx f64) (local $cy f64) (local $zr f64) (local $zi f64) (local $zr2 f64) (local $zi2 f64)
    (local.set $cy
      (f64.add (f64.const -1.5)
        (f64.div (f64.mul (f64.const 3.0) (f64.convert_i32_u (local.get $y)))
                 (f64.convert_i32_u (global.get $height)))))
    (block $row_done
      (loop $pixel
        (br_if $row_done (i32.ge_u (local.get $x) (global.get $width)))
        (local.set $cx
          (f64.add (f64.const -2.0)
            (f64.div (f64.mul (f64.const 3.0) (f64.convert_i32_u (local.get $x)))
                     (f64.convert_i32_u (global.get $width)))))
        (local.set $zr (f64.const 0))
        (local.set $zi (f64.const 0))
        (local.set $i (i32.const 0))
        (block $escaped
          (loop $iterate
            (br_if $escaped (i32.ge_u (local.get $i) (global.get $max_iter)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $escaped (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4.0)))
            ;; z = z*z + c, with the imaginary part first since it needs the old real part.
            (local.set $zi
              (f64.add (f64.mul (f64.mul (f64.const 2.0) (local.get $zr)) (local.get $zi))
                       (local.get $cy)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cx)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $iterate)))
        ;; MAX_ITER <= 1000000, so $i * 255 fits an i32.
        (i32.store8 (i32.add (local.get $buf) (local.get $x))
          (i32.sub (i32.const 255)
            (i32.div_u (i32.mul (local.get $i) (i32.const 255)) (global.get $max_iter))))
        (local.set $x (i32.add (local.get $x) (i32.const 1)))
        (br $pixel))))

  ;; Renders the rows named by the 16-byte input; returns 0 or an error code (see the top).
  (func $render_rows (param $in i32) (param $in_len i32) (result i32)
    (local $start i64) (local $end i64) (local $y i32) (local $row i32)
    (if (i32.eqz (global.get $ready)) (then (return (i32.const 2))))
    (if (i32.ne (local.get $in_len) (i32.const 16)) (then (return (i32.const 3))))
    (local.set $start (i64.load (local.get $in)))
    (local.set $end (i64.load offset=8 (local.get $in)))
    (if (i32.or (i64.gt_u (local.get $start) (local.get $end))
                (i64.gt_u (local.get $end) (i64.extend_i32_u (global.get $height))))
      (then (return (i32.const 4))))
    ;; Only the chunk holding row 0 carries the header, so it appears once, first.
    (if (i32.and (i64.eqz (local.get $start)) (i64.ne (local.get $start) (local.get $end)))
      (then (call $emit_header)))
    (local.set $row (call $alloc (global.get $width)))
    ;; Both bounds are at most HEIGHT <= 1000000, so they fit an i32.
    (local.set $y (i32.wrap_i64 (local.get $start)))
    (block $done
      (loop $next
        (br_if $done (i64.ge_u (i64.extend_i32_u (local.get $y)) (local.get $end)))
        (call $render_row (local.get $y) (local.get $row))
        (call $emit (local.get $row) (global.get $width))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; ---- ABI ----------------------------------------------------------------------------------
  (func (export "dispy_abi_version") (result i32) (i32.const 1))

  (func (export "dispy_run")
        (param $in i32) (param $in_len i32) (param $args i32) (param $args_len i32) (result i32)
    (local $code i32)
    (local.set $code (call $render_rows (local.get $in) (local.get $in_len)))
    ;; Free the input and the row buffer (see the allocator above).
    (global.set $heap (local.get $in))
    (local.get $code))
)
