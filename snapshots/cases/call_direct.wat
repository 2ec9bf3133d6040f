;; A direct call to a function defined in the module: a PC-relative call, passing the VM
;; context as both the callee's and the caller's.
(module
  (func $add (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "caller") (param i32) (result i32)
    (call $add (local.get 0) (i32.const 1))))
