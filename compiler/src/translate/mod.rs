//! Kiln's function translator: wasm operators to Cranelift IR.
//!
//! [`FuncTranslator::translate`] reads a body operator by operator, validating each with
//! wasmparser before translating it. Wasm's operand stack becomes a stack of SSA values, its
//! control stack a stack of [`Frame`]s whose continuations are Cranelift blocks taking the
//! construct's results as parameters, and its locals become cranelift-frontend variables.
//! Operator groups live in their own files ([`numeric`] scalars, [`simd`] vectors,
//! [`memory`] linear-memory accesses); everything that touches the instance (globals, heaps,
//! tables, calls, libcalls, fuel, interrupts) goes through [`FuncEnv`], so this module knows
//! nothing about slot layout.
//!
//! Code after an unconditional branch is validated but not translated: only its nesting is
//! tracked, so that the `else` or `end` that makes code reachable again is recognised.
//!
//! Exception handlers: every `try_table` (and legacy `try`) has a *dispatch* block taking the
//! exnref of an exception thrown in its body. Calls in the body are `try_call`s whose exception
//! edge goes there, and `throw`s in the body jump there directly. The dispatch compares the
//! exception's tag with each clause's in order and branches to the first that matches; if none
//! does, it passes the exception on to the enclosing handler's dispatch, or throws it out of
//! the function (the runtime's unwinder then finds the next guest frame's handler).

mod gc;
mod memory;
mod numeric;
mod simd;

use cranelift_codegen::ir::{self, condcodes::IntCC, types, Block, BlockArg, InstBuilder, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use wasmparser::{BlockType, Catch, FuncValidator, FunctionBody, Operator, ValidatorResources};

use crate::func_env::{ir_type, FuncEnv};
use crate::module::{invalid, ir_type_of};
use crate::CompileError;

/// Pops the top operand.
pub(super) fn pop1(stack: &mut Vec<Value>) -> Value {
    stack.pop().expect("validated code never pops an empty operand stack")
}

/// Pops the top two operands, the deeper first: `(a, b)` for a wasm `a b op`.
pub(super) fn pop2(stack: &mut Vec<Value>) -> (Value, Value) {
    let b = pop1(stack);
    let a = pop1(stack);
    (a, b)
}

/// Pops the top three operands, the deepest first.
pub(super) fn pop3(stack: &mut Vec<Value>) -> (Value, Value, Value) {
    let c = pop1(stack);
    let (a, b) = pop2(stack);
    (a, b, c)
}

/// Pops the top `n` operands, the deepest first.
fn pop_n(stack: &mut Vec<Value>, n: usize) -> Vec<Value> {
    stack.split_off(stack.len() - n)
}

/// Reinterprets vector `value` as `ty` (lane order little-endian, as wasm's).
pub(super) fn bitcast(builder: &mut FunctionBuilder<'_>, ty: ir::Type, value: Value) -> Value {
    if builder.func.dfg.value_type(value) == ty {
        return value;
    }
    let flags = ir::MemFlagsData::new().with_endianness(ir::Endianness::Little);
    builder.ins().bitcast(ty, flags, value)
}

/// Vector `value` as the `I8X16` every v128 on the operand stack has.
pub(super) fn to_i8x16(builder: &mut FunctionBuilder<'_>, value: Value) -> Value {
    bitcast(builder, types::I8X16, value)
}

/// A construct on the control stack.
struct Frame {
    kind: FrameKind,
    /// Where execution continues after the construct's `end`, with a parameter per result.
    next: Block,
    /// How many values the construct takes and leaves.
    params: usize,
    results: usize,
    /// Operand stack height below the construct's parameters.
    height: usize,
    /// Whether anything jumps to `next` yet (a branch, or falling off the end).
    next_reached: bool,
    /// The dispatch block of the handler for exceptions thrown by code directly inside the
    /// construct (`None`: they leave the function).
    handler: Option<Block>,
}

enum FrameKind {
    Block,
    /// Branches to a loop go back to its header, which takes the loop's parameters.
    Loop {
        header: Block,
    },
    /// `else_block` starts the false arm (or passes the parameters on if there is none).
    If {
        else_block: Block,
        params: Vec<Value>,
        else_seen: bool,
    },
    /// `try_table`: its dispatch block, complete from the start (sealed at the end).
    TryTable {
        dispatch: Block,
    },
    /// Legacy `try`: the dispatch is written at the end, when every `catch` is known. Each
    /// clause's block takes the payload (none for `catch_all`) and the exnref, which `caught`
    /// keeps for `rethrow`.
    Try {
        dispatch: Block,
        clauses: Vec<(Option<u32>, Block)>,
        caught: Variable,
    },
}

impl Frame {
    /// Where a branch to this frame goes, and how many values it carries.
    fn branch_target(&self) -> (Block, usize) {
        match self.kind {
            FrameKind::Loop { header } => (header, self.params),
            _ => (self.next, self.results),
        }
    }
}

/// One catch clause of a dispatch.
struct Clause {
    /// The tag it catches (`None`: every exception).
    tag: Option<u32>,
    /// Where it branches, with the payload (for a tag) and then the exnref if `with_exn`
    /// (otherwise the exception is released, unless it escaped before).
    target: Block,
    with_exn: bool,
}

/// Reusable state for translating functions one after another.
#[derive(Default)]
pub(crate) struct FuncTranslator {
    builder_ctx: FunctionBuilderContext,
}

/// The state of one function's translation.
struct State {
    stack: Vec<Value>,
    control: Vec<Frame>,
    locals: Vec<Variable>,
    /// Whether the code being translated can run (false after an unconditional branch).
    reachable: bool,
    /// Constructs opened inside unreachable code, which are validated but not translated.
    dead_depth: usize,
    /// Operand-stack values already looked at for [`State::declare_references`].
    examined: cranelift_entity::EntitySet<Value>,
}

impl FuncTranslator {
    /// Translates `body` into `func`, whose signature (the wasm signature with the two VM
    /// context parameters in front) and name are already set. `validator` checks every
    /// operator first, so translation only ever sees valid code.
    pub fn translate(
        &mut self,
        validator: &mut FuncValidator<ValidatorResources>,
        body: &FunctionBody<'_>,
        func: &mut ir::Function,
        env: &mut FuncEnv<'_, '_>,
        frontend: TargetFrontendConfig,
    ) -> Result<(), CompileError> {
        let mut builder = FunctionBuilder::new(func, &mut self.builder_ctx);
        let entry = builder.create_block();
        builder.append_block_params_for_function_params(entry);
        builder.switch_to_block(entry);
        builder.seal_block(entry);

        let mut state = State {
            stack: Vec::new(),
            control: Vec::new(),
            locals: Vec::new(),
            reachable: true,
            dead_depth: 0,
            examined: Default::default(),
        };
        // Parameters 0 and 1 are the callee's and the caller's VM contexts.
        let params = builder.block_params(entry)[2..].to_vec();
        for (i, param) in params.into_iter().enumerate() {
            let ty = builder.func.dfg.value_type(param);
            let var = builder.declare_var(ty);
            if validator.get_local_type(i as u32).is_some_and(|t| holds_gc_reference(validator, t)) {
                builder.declare_var_needs_stack_map(var);
            }
            builder.def_var(var, param);
            state.locals.push(var);
        }
        let mut locals = body.get_locals_reader().map_err(invalid)?;
        for _ in 0..locals.get_count() {
            let offset = locals.original_position();
            let (count, wasm_ty) = locals.read().map_err(invalid)?;
            validator.define_locals(offset, count, wasm_ty).map_err(invalid)?;
            let ty = ir_type_of(wasm_ty);
            for _ in 0..count {
                let zero = zero_value(&mut builder, ty);
                let var = builder.declare_var(ty);
                if holds_gc_reference(validator, wasm_ty) {
                    builder.declare_var_needs_stack_map(var);
                }
                builder.def_var(var, zero);
                state.locals.push(var);
            }
        }

        // The body is a block whose continuation returns its results.
        let results: Vec<ir::Type> = builder.func.signature.returns.iter().map(|r| r.value_type).collect();
        let exit = builder.create_block();
        for &ty in &results {
            builder.append_block_param(exit, ty);
        }
        state.control.push(Frame {
            kind: FrameKind::Block,
            next: exit,
            params: 0,
            results: results.len(),
            height: 0,
            next_reached: false,
            handler: None,
        });
        let vmctx = builder.block_params(entry)[0];
        env.function_entry(&mut builder, vmctx);

        let mut reader = body.get_operators_reader().map_err(invalid)?;
        while !reader.eof() {
            let (op, offset) = reader.read_with_offset().map_err(invalid)?;
            validator.op(offset, &op).map_err(invalid)?;
            // Machine code keeps the wasm offset of the operator it came from.
            builder.set_srcloc(ir::SourceLoc::new(u32::try_from(offset).unwrap_or(u32::MAX)));
            if state.reachable {
                env.before_operator(&op, &mut builder);
            }
            state.translate(&op, &mut builder, env)?;
            // (After the body's final `end`, the results are returned, not on the stack.)
            if state.reachable && !state.control.is_empty() {
                state.declare_references(validator, &mut builder);
            }
        }
        reader.finish().map_err(invalid)?;
        builder.finalize(frontend);
        Ok(())
    }
}

/// Whether a value of `ty` may refer to a GC object (any reference of the `any` or `extern`
/// hierarchies: the two share one encoding), so a collector must find it on the stack. The
/// validator reports concrete types by module index or by its own type id.
fn holds_gc_reference(validator: &FuncValidator<ValidatorResources>, ty: wasmparser::ValType) -> bool {
    use wasmparser::{AbstractHeapType as A, CompositeInnerType, HeapType as H, UnpackedIndex, WasmModuleResources};
    let wasmparser::ValType::Ref(r) = ty else { return false };
    match r.heap_type() {
        H::Abstract { ty, .. } => matches!(ty, A::Any | A::Eq | A::Struct | A::Array | A::Extern),
        H::Concrete(index) | H::Exact(index) => {
            let resources = validator.resources();
            let sub = match index {
                UnpackedIndex::Module(i) => resources.sub_type_at(i),
                UnpackedIndex::Id(id) => Some(resources.sub_type_at_id(id)),
                UnpackedIndex::RecGroup(_) => None,
            };
            sub.is_some_and(|s| {
                matches!(s.composite_type.inner, CompositeInnerType::Struct(_) | CompositeInnerType::Array(_))
            })
        }
    }
}

/// The zero a declared local starts as.
fn zero_value(builder: &mut FunctionBuilder<'_>, ty: ir::Type) -> Value {
    match ty {
        types::F32 => builder.ins().f32const(0.0),
        types::F64 => builder.ins().f64const(0.0),
        ty if ty.is_vector() => {
            let zero = builder.func.dfg.constants.insert(vec![0u8; 16].into());
            builder.ins().vconst(ty, zero)
        }
        ty => builder.ins().iconst(ty, 0),
    }
}

/// Ends the current arm of `frame` (its body, an `if` arm, a legacy `catch` clause): if it is
/// `reachable`, its results, on top of `stack`, go to the construct's continuation.
fn close_arm(stack: &mut Vec<Value>, reachable: bool, frame: &mut Frame, builder: &mut FunctionBuilder<'_>) {
    if reachable {
        let results = stack.split_off(stack.len() - frame.results);
        builder.ins().jump(frame.next, &block_args(&results));
        frame.next_reached = true;
    }
}

fn block_args(values: &[Value]) -> Vec<BlockArg> {
    values.iter().map(|&v| BlockArg::Value(v)).collect()
}

impl State {
    /// Declares the operand-stack values an operator just pushed that may refer to GC objects
    /// as needing stack maps, so that Cranelift spills them around every call and reloads them
    /// after it (a collection may move what they refer to). New values are on top of the stack:
    /// the walk stops at the first value already looked at.
    fn declare_references(&mut self, validator: &FuncValidator<ValidatorResources>, builder: &mut FunctionBuilder<'_>) {
        debug_assert_eq!(validator.operand_stack_height() as usize, self.stack.len(), "stacks in step");
        for (depth, &value) in self.stack.iter().rev().enumerate() {
            if !self.examined.insert(value) {
                break;
            }
            if let Some(Some(ty)) = validator.get_operand_type(depth) {
                if holds_gc_reference(validator, ty) {
                    builder.declare_value_needs_stack_map(value);
                }
            }
        }
    }

    /// The parameter and result types of a block type.
    fn block_signature(env: &FuncEnv<'_, '_>, ty: BlockType) -> (Vec<ir::Type>, Vec<ir::Type>) {
        match ty {
            BlockType::Empty => (Vec::new(), Vec::new()),
            BlockType::Type(ty) => (Vec::new(), vec![ir_type_of(ty)]),
            BlockType::FuncType(index) => {
                let ty = env.func_type(index);
                (ty.params.iter().map(|&p| ir_type(p)).collect(), ty.results.iter().map(|&r| ir_type(r)).collect())
            }
        }
    }

    /// A new block with a parameter of each of `types`.
    fn block_with_params(builder: &mut FunctionBuilder<'_>, types: &[ir::Type]) -> Block {
        let block = builder.create_block();
        for &ty in types {
            builder.append_block_param(block, ty);
        }
        block
    }

    /// The dispatch block for exceptions thrown by the code being translated.
    fn handler(&self) -> Option<Block> {
        self.control.last().and_then(|frame| frame.handler)
    }

    /// The block a `catch` clause with label `depth` branches to (and records that it is
    /// reached).
    fn catch_target(&mut self, depth: u32) -> Block {
        let frame = self.frame_mut(depth);
        if !matches!(frame.kind, FrameKind::Loop { .. }) {
            frame.next_reached = true;
        }
        frame.branch_target().0
    }

    /// Passes exception `exn` to `handler`'s dispatch, or throws it out of the function.
    fn forward(handler: Option<Block>, exn: Value, builder: &mut FunctionBuilder<'_>, env: &mut FuncEnv<'_, '_>) {
        match handler {
            Some(dispatch) => {
                builder.ins().jump(dispatch, &[BlockArg::Value(exn)]);
            }
            None => env.throw_out(builder, exn),
        }
    }

    /// Throws `exn` from the code being translated.
    fn throw(&mut self, exn: Value, builder: &mut FunctionBuilder<'_>, env: &mut FuncEnv<'_, '_>) {
        Self::forward(self.handler(), exn, builder, env);
        self.reachable = false;
    }

    /// Writes a dispatch: for each clause in order, if it is a catch-all or `exn`'s tag is its
    /// tag, branch to its target with the payload (for a tag) and the exnref (`with_exn`); if
    /// none matches, pass `exn` on to `outer`. The dispatch block must be the current one.
    fn dispatch(
        exn: Value,
        clauses: &[Clause],
        outer: Option<Block>,
        builder: &mut FunctionBuilder<'_>,
        env: &mut FuncEnv<'_, '_>,
    ) {
        for clause in clauses {
            let mut args = Vec::new();
            let no_match = clause.tag.map(|tag| {
                let matched = builder.create_block();
                let no_match = builder.create_block();
                let has_tag = env.exception_has_tag(builder, exn, tag);
                builder.ins().brif(has_tag, matched, &[], no_match, &[]);
                builder.seal_block(matched);
                builder.switch_to_block(matched);
                args = env.exception_payload(builder, exn, tag);
                no_match
            });
            // A clause that hands the exnref on makes it a value; one that does not is the
            // last holder of an exception that never became one.
            if clause.with_exn {
                env.exception_escapes(builder, exn);
                args.push(exn);
            } else {
                env.drop_exception(builder, exn);
            }
            builder.ins().jump(clause.target, &block_args(&args));
            // Clauses after a catch-all never match: they are written into a block nothing reaches.
            let rest = no_match.unwrap_or_else(|| builder.create_block());
            builder.seal_block(rest);
            builder.switch_to_block(rest);
        }
        Self::forward(outer, exn, builder, env);
    }

    /// `try_table`: the dispatch is written first (its clauses' labels count from outside the
    /// construct), then the body starts in a new block.
    fn translate_try_table(
        &mut self,
        table: &wasmparser::TryTable,
        builder: &mut FunctionBuilder<'_>,
        env: &mut FuncEnv<'_, '_>,
    ) {
        let (params, results) = Self::block_signature(env, table.ty);
        let next = Self::block_with_params(builder, &results);
        let dispatch = Self::block_with_params(builder, &[types::I64]);
        let body = builder.create_block();
        builder.ins().jump(body, &[]);
        let clauses: Vec<Clause> = table
            .catches
            .iter()
            .map(|catch| {
                let (tag, label, with_exn) = match *catch {
                    Catch::One { tag, label } => (Some(tag), label, false),
                    Catch::OneRef { tag, label } => (Some(tag), label, true),
                    Catch::All { label } => (None, label, false),
                    Catch::AllRef { label } => (None, label, true),
                };
                Clause { tag, target: self.catch_target(label), with_exn }
            })
            .collect();
        builder.switch_to_block(dispatch);
        let exn = builder.block_params(dispatch)[0];
        Self::dispatch(exn, &clauses, self.handler(), builder, env);
        builder.seal_block(body);
        builder.switch_to_block(body);
        self.push_frame(FrameKind::TryTable { dispatch }, next, params.len(), results.len(), Some(dispatch));
    }

    /// Legacy `catch` and `catch_all` (`tag` is `None`): ends the `try` body or the previous
    /// clause and starts this clause's block, whose exceptions go to the enclosing handler.
    fn translate_catch(&mut self, tag: Option<u32>, builder: &mut FunctionBuilder<'_>, env: &mut FuncEnv<'_, '_>) {
        let outer = self.control.len().checked_sub(2).and_then(|i| self.control[i].handler);
        let frame = self.control.last_mut().expect("validated: catch closes a try");
        close_arm(&mut self.stack, self.reachable, frame, builder);
        let FrameKind::Try { ref mut clauses, caught, .. } = frame.kind else {
            unreachable!("validated: catch closes a try")
        };
        let mut types = tag.map(|t| env.tag_params(t)).unwrap_or_default();
        types.push(types::I64);
        let block = Self::block_with_params(builder, &types);
        clauses.push((tag, block));
        frame.handler = outer;
        self.stack.truncate(frame.height);
        builder.switch_to_block(block);
        let values = builder.block_params(block).to_vec();
        let (&exn, payload) = values.split_last().expect("the exnref parameter");
        builder.def_var(caught, exn);
        self.stack.extend_from_slice(payload);
        self.reachable = true;
    }

    /// Opens a construct that takes `params` values from the operand stack and leaves
    /// `results`, continuing at `next`; exceptions thrown directly inside go to `handler`.
    fn push_frame(&mut self, kind: FrameKind, next: Block, params: usize, results: usize, handler: Option<Block>) {
        let height = self.stack.len() - params;
        self.control.push(Frame { kind, next, params, results, height, next_reached: false, handler });
    }

    /// The frame `depth` levels up (0 is the innermost).
    fn frame_mut(&mut self, depth: u32) -> &mut Frame {
        let index = self.control.len() - 1 - depth as usize;
        &mut self.control[index]
    }

    /// Where a branch to `depth` goes and with which values (the top of the operand stack,
    /// left in place), and records that the target is reached.
    fn branch(&mut self, depth: u32) -> (Block, Vec<BlockArg>) {
        let frame = self.frame_mut(depth);
        let (target, arity) = frame.branch_target();
        if !matches!(frame.kind, FrameKind::Loop { .. }) {
            frame.next_reached = true;
        }
        let args = block_args(&self.stack[self.stack.len() - arity..]);
        (target, args)
    }

    fn translate(
        &mut self,
        op: &Operator<'_>,
        builder: &mut FunctionBuilder<'_>,
        env: &mut FuncEnv<'_, '_>,
    ) -> Result<(), CompileError> {
        if !self.reachable {
            self.translate_unreachable(op, builder, env);
            return Ok(());
        }
        env.set_handler(self.handler());
        use Operator as O;
        match *op {
            O::Nop => {}
            O::Unreachable => {
                builder.ins().trap(crate::func_env::trap(kiln_abi::TrapCode::UnreachableCodeReached));
                self.reachable = false;
            }
            O::Block { blockty } => {
                let (params, results) = Self::block_signature(env, blockty);
                let next = Self::block_with_params(builder, &results);
                self.push_frame(FrameKind::Block, next, params.len(), results.len(), self.handler());
            }
            O::Loop { blockty } => {
                let (params, results) = Self::block_signature(env, blockty);
                let header = Self::block_with_params(builder, &params);
                let next = Self::block_with_params(builder, &results);
                let args = pop_n(&mut self.stack, params.len());
                builder.ins().jump(header, &block_args(&args));
                builder.switch_to_block(header);
                self.stack.extend_from_slice(builder.block_params(header));
                self.push_frame(FrameKind::Loop { header }, next, params.len(), results.len(), self.handler());
                env.loop_header(builder);
            }
            O::If { blockty } => {
                let condition = pop1(&mut self.stack);
                let (params, results) = Self::block_signature(env, blockty);
                let then_block = builder.create_block();
                let else_block = builder.create_block();
                let next = Self::block_with_params(builder, &results);
                builder.ins().brif(condition, then_block, &[], else_block, &[]);
                builder.seal_block(then_block);
                builder.switch_to_block(then_block);
                let height = self.stack.len() - params.len();
                self.push_frame(
                    FrameKind::If { else_block, params: self.stack[height..].to_vec(), else_seen: false },
                    next,
                    params.len(),
                    results.len(),
                    self.handler(),
                );
            }
            O::Else => self.translate_else(builder),
            O::End => self.translate_end(builder, env, None),
            O::TryTable { ref try_table } => self.translate_try_table(try_table, builder, env),
            O::Throw { tag_index } => {
                let payload = pop_n(&mut self.stack, env.tag_params(tag_index).len());
                let exn = env.new_exception(builder, tag_index, &payload);
                self.throw(exn, builder, env);
            }
            O::ThrowRef => {
                let exn = pop1(&mut self.stack);
                builder.ins().trapz(exn, crate::func_env::trap(kiln_abi::TrapCode::NullExceptionReference));
                self.throw(exn, builder, env);
            }
            O::Try { blockty } => {
                let (params, results) = Self::block_signature(env, blockty);
                let next = Self::block_with_params(builder, &results);
                let dispatch = Self::block_with_params(builder, &[types::I64]);
                let caught = builder.declare_var(types::I64);
                self.push_frame(
                    FrameKind::Try { dispatch, clauses: Vec::new(), caught },
                    next,
                    params.len(),
                    results.len(),
                    Some(dispatch),
                );
            }
            O::Catch { tag_index } => self.translate_catch(Some(tag_index), builder, env),
            O::CatchAll => self.translate_catch(None, builder, env),
            O::Rethrow { relative_depth } => {
                let FrameKind::Try { caught, .. } = self.frame_mut(relative_depth).kind else {
                    unreachable!("validated: rethrow names a catch")
                };
                let exn = builder.use_var(caught);
                self.throw(exn, builder, env);
            }
            O::Delegate { relative_depth } => self.translate_end(builder, env, Some(relative_depth)),
            O::Br { relative_depth } => {
                let (target, args) = self.branch(relative_depth);
                builder.ins().jump(target, &args);
                self.reachable = false;
            }
            O::BrIf { relative_depth } => {
                let condition = pop1(&mut self.stack);
                let (target, args) = self.branch(relative_depth);
                let fallthrough = builder.create_block();
                builder.ins().brif(condition, target, &args, fallthrough, &[]);
                builder.seal_block(fallthrough);
                builder.switch_to_block(fallthrough);
            }
            O::BrTable { ref targets } => {
                let index = pop1(&mut self.stack);
                let mut calls = Vec::with_capacity(targets.len() as usize);
                for depth in targets.targets() {
                    let (target, args) = self.branch(depth.map_err(invalid)?);
                    calls.push(builder.func.dfg.block_call(target, &args));
                }
                let (target, args) = self.branch(targets.default());
                let default = builder.func.dfg.block_call(target, &args);
                let table = builder.create_jump_table(ir::JumpTableData::new(default, &calls));
                builder.ins().br_table(index, table);
                self.reachable = false;
            }
            O::BrOnNull { relative_depth } => {
                let reference = pop1(&mut self.stack);
                let (target, args) = self.branch(relative_depth);
                let non_null = builder.create_block();
                builder.ins().brif(reference, non_null, &[], target, &args);
                builder.seal_block(non_null);
                builder.switch_to_block(non_null);
                self.stack.push(reference);
            }
            O::BrOnNonNull { relative_depth } => {
                // The branch carries the reference (still on the stack) too.
                let (target, args) = self.branch(relative_depth);
                let reference = pop1(&mut self.stack);
                let null = builder.create_block();
                builder.ins().brif(reference, target, &args, null, &[]);
                builder.seal_block(null);
                builder.switch_to_block(null);
            }
            O::BrOnCast { relative_depth, to_ref_type, .. } | O::BrOnCastFail { relative_depth, to_ref_type, .. } => {
                // The branch carries the reference (still on the stack) too.
                let reference = *self.stack.last().expect("validated");
                let target_type = kiln_abi::RefType {
                    nullable: to_ref_type.is_nullable(),
                    heap: env.heap_type(to_ref_type.heap_type()),
                };
                let is = gc::ref_test(builder, env, reference, target_type);
                let (target, args) = self.branch(relative_depth);
                let fallthrough = builder.create_block();
                if matches!(op, O::BrOnCast { .. }) {
                    builder.ins().brif(is, target, &args, fallthrough, &[]);
                } else {
                    builder.ins().brif(is, fallthrough, &[], target, &args);
                }
                builder.seal_block(fallthrough);
                builder.switch_to_block(fallthrough);
            }
            O::Return => {
                let results = self.control[0].results;
                let values = pop_n(&mut self.stack, results);
                builder.ins().return_(&values);
                self.reachable = false;
            }
            O::Call { function_index } => {
                let ty = env.func_type(env.meta().func_types[function_index as usize]);
                let args = pop_n(&mut self.stack, ty.params.len());
                let results = env.call(builder, function_index, &args, false);
                self.stack.extend(results);
            }
            O::ReturnCall { function_index } => {
                let ty = env.func_type(env.meta().func_types[function_index as usize]);
                let args = pop_n(&mut self.stack, ty.params.len());
                env.call(builder, function_index, &args, true);
                self.reachable = false;
            }
            O::CallIndirect { type_index, table_index } | O::ReturnCallIndirect { type_index, table_index } => {
                let tail = matches!(op, O::ReturnCallIndirect { .. });
                let callee = pop1(&mut self.stack);
                let args = pop_n(&mut self.stack, env.func_type(type_index).params.len());
                let results = env.call_indirect(builder, table_index, type_index, callee, &args, tail);
                self.stack.extend(results);
                self.reachable = !tail;
            }
            O::CallRef { type_index } | O::ReturnCallRef { type_index } => {
                let tail = matches!(op, O::ReturnCallRef { .. });
                let callee = pop1(&mut self.stack);
                let args = pop_n(&mut self.stack, env.func_type(type_index).params.len());
                let results = env.call_ref(builder, type_index, callee, &args, tail);
                self.stack.extend(results);
                self.reachable = !tail;
            }
            O::Drop => {
                pop1(&mut self.stack);
            }
            O::Select | O::TypedSelect { .. } => {
                let (a, b, condition) = pop3(&mut self.stack);
                self.stack.push(builder.ins().select(condition, a, b));
            }
            O::LocalGet { local_index } => self.stack.push(builder.use_var(self.locals[local_index as usize])),
            O::LocalSet { local_index } => {
                let value = pop1(&mut self.stack);
                builder.def_var(self.locals[local_index as usize], value);
            }
            O::LocalTee { local_index } => {
                let value = *self.stack.last().expect("validated");
                builder.def_var(self.locals[local_index as usize], value);
            }
            O::GlobalGet { global_index } => self.stack.push(env.global_get(builder, global_index)),
            O::GlobalSet { global_index } => {
                let value = pop1(&mut self.stack);
                env.global_set(builder, global_index, value);
            }
            O::MemorySize { mem } => self.stack.push(env.memory_size(builder, mem)),
            O::MemoryGrow { mem } => {
                let delta = pop1(&mut self.stack);
                self.stack.push(env.memory_grow(builder, mem, delta));
            }
            O::MemoryFill { mem } => {
                let (dst, value, len) = pop3(&mut self.stack);
                env.memory_fill(builder, mem, dst, value, len);
            }
            O::MemoryCopy { dst_mem, src_mem } => {
                let (dst, src, len) = pop3(&mut self.stack);
                env.memory_copy(builder, dst_mem, src_mem, [dst, src, len]);
            }
            O::MemoryInit { data_index, mem } => {
                let (dst, src, len) = pop3(&mut self.stack);
                env.memory_init(builder, mem, data_index, [dst, src, len]);
            }
            O::DataDrop { data_index } => env.data_drop(builder, data_index),
            O::TableGet { table } => {
                let index = pop1(&mut self.stack);
                self.stack.push(env.table_get(builder, table, index));
            }
            O::TableSet { table } => {
                let (index, value) = pop2(&mut self.stack);
                env.table_set(builder, table, index, value);
            }
            O::TableSize { table } => self.stack.push(env.table_size(builder, table)),
            O::TableGrow { table } => {
                let (init, delta) = pop2(&mut self.stack);
                self.stack.push(env.table_grow(builder, table, init, delta));
            }
            O::TableFill { table } => {
                let (dst, value, len) = pop3(&mut self.stack);
                env.table_fill(builder, table, [dst, value, len]);
            }
            O::TableCopy { dst_table, src_table } => {
                let (dst, src, len) = pop3(&mut self.stack);
                env.table_copy(builder, dst_table, src_table, [dst, src, len]);
            }
            O::TableInit { elem_index, table } => {
                let (dst, src, len) = pop3(&mut self.stack);
                env.table_init(builder, table, elem_index, [dst, src, len]);
            }
            O::ElemDrop { elem_index } => env.elem_drop(builder, elem_index),
            O::RefNull { .. } => self.stack.push(builder.ins().iconst(types::I64, 0)),
            O::RefIsNull => {
                let reference = pop1(&mut self.stack);
                let is_null = builder.ins().icmp_imm_s(IntCC::Equal, reference, 0);
                self.stack.push(builder.ins().uextend(types::I32, is_null));
            }
            O::RefFunc { function_index } => self.stack.push(env.ref_func(builder, function_index)),
            O::RefAsNonNull => {
                let reference = *self.stack.last().expect("validated");
                builder.ins().trapz(reference, crate::func_env::trap(kiln_abi::TrapCode::NullReference));
            }
            _ => {
                let handled = numeric::translate(op, builder, &mut self.stack)
                    || memory::translate(op, builder, env, &mut self.stack)
                    || gc::translate(op, builder, env, &mut self.stack)
                    || simd::translate(op, builder, &mut self.stack);
                if !handled {
                    return Err(CompileError::Unsupported(format!("the operator {}", operator_name(op))));
                }
            }
        }
        Ok(())
    }

    /// Tracks nesting in unreachable code until an `else`, `end`, `catch`, `catch_all` or
    /// `delegate` of a live construct makes code reachable again (a legacy `try` ends with
    /// `end` or `delegate`).
    fn translate_unreachable(
        &mut self,
        op: &Operator<'_>,
        builder: &mut FunctionBuilder<'_>,
        env: &mut FuncEnv<'_, '_>,
    ) {
        match *op {
            Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::TryTable { .. }
            | Operator::Try { .. } => self.dead_depth += 1,
            Operator::Else if self.dead_depth == 0 => self.translate_else(builder),
            Operator::End if self.dead_depth == 0 => self.translate_end(builder, env, None),
            Operator::Delegate { relative_depth } if self.dead_depth == 0 => {
                self.translate_end(builder, env, Some(relative_depth))
            }
            Operator::Catch { tag_index } if self.dead_depth == 0 => {
                self.translate_catch(Some(tag_index), builder, env)
            }
            Operator::CatchAll if self.dead_depth == 0 => self.translate_catch(None, builder, env),
            Operator::End | Operator::Delegate { .. } => self.dead_depth -= 1,
            _ => {}
        }
    }

    fn translate_else(&mut self, builder: &mut FunctionBuilder<'_>) {
        let frame = self.control.last_mut().expect("validated: else closes an if");
        close_arm(&mut self.stack, self.reachable, frame, builder);
        let FrameKind::If { else_block, ref params, ref mut else_seen } = frame.kind else {
            unreachable!("validated: else closes an if")
        };
        *else_seen = true;
        self.stack.truncate(frame.height);
        self.stack.extend_from_slice(params);
        builder.seal_block(else_block);
        builder.switch_to_block(else_block);
        self.reachable = true;
    }

    /// `end`, or a legacy `delegate` (`delegate` is the label its exceptions go to).
    fn translate_end(&mut self, builder: &mut FunctionBuilder<'_>, env: &mut FuncEnv<'_, '_>, delegate: Option<u32>) {
        let mut frame = self.control.pop().expect("validated: end closes a construct");
        close_arm(&mut self.stack, self.reachable, &mut frame, builder);
        match frame.kind {
            // Without an `else`, a false condition passes the parameters on as results.
            FrameKind::If { else_block, ref params, else_seen: false } => {
                builder.seal_block(else_block);
                builder.switch_to_block(else_block);
                builder.ins().jump(frame.next, &block_args(params));
                frame.next_reached = true;
            }
            FrameKind::Loop { header } => builder.seal_block(header),
            FrameKind::TryTable { dispatch } => builder.seal_block(dispatch),
            FrameKind::Try { dispatch, ref clauses, .. } => {
                // Exceptions no clause catches go where the `delegate` says, else to the
                // handler around the `try`.
                let outer = match delegate {
                    Some(depth) => self.frame_mut(depth).handler,
                    None => self.handler(),
                };
                let clauses: Vec<Clause> =
                    clauses.iter().map(|&(tag, target)| Clause { tag, target, with_exn: true }).collect();
                builder.switch_to_block(dispatch);
                let exn = builder.block_params(dispatch)[0];
                Self::dispatch(exn, &clauses, outer, builder, env);
                builder.seal_block(dispatch);
                for clause in &clauses {
                    builder.seal_block(clause.target);
                }
            }
            _ => {}
        }
        self.stack.truncate(frame.height);
        builder.seal_block(frame.next);
        builder.switch_to_block(frame.next);
        self.stack.extend_from_slice(builder.block_params(frame.next));
        self.reachable = frame.next_reached;
        if self.control.is_empty() && self.reachable {
            // The end of the function body: return its results.
            let values = std::mem::take(&mut self.stack);
            builder.ins().return_(&values);
        }
    }
}

/// The operator's name for error messages (`StructNew`, not its fields).
fn operator_name(op: &Operator<'_>) -> String {
    let debug = format!("{op:?}");
    debug.split([' ', '{', '(']).next().unwrap_or_default().to_string()
}
