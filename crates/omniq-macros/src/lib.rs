//! The `#[task]` attribute of OmniQ, used through `omniq_async::task` or `omniq::task`:
//! a plain `async fn` (or a plain `fn`, a blocking task) becomes a task type.
//!
//! ```ignore
//! use omniq_async::{TaskContext, TaskError, task};
//!
//! #[task(queue = "images", max_attempts = 5)]
//! async fn resize(path: String, width: u32, ctx: TaskContext) -> Result<String, TaskError> {
//!     Ok(format!("{path}@{width} (attempt {})", ctx.attempt()))
//! }
//!
//! // `resize` is now also a task type: its fields are the arguments.
//! // omniq.register::<resize>();
//! // omniq.enqueue(resize { path: "cat.png".into(), width: 300 }).await?;
//! // or, with the generated helper:
//! // resize::enqueue(&omniq, "cat.png".into(), 300).priority(5).await?;
//! ```

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{
    Expr, FnArg, GenericArgument, ItemFn, LitStr, Meta, Pat, PathArguments, ReturnType, Token, Type,
};

/// The task attribute for `omniq-async` (generated paths start `::omniq_async`).
#[proc_macro_attribute]
pub fn task_async(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args, item, quote!(::omniq_async), quote!(AsyncOmniQ))
}

/// The task attribute for the blocking facade `omniq` (generated paths start `::omniq`).
#[proc_macro_attribute]
pub fn task_blocking_facade(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args, item, quote!(::omniq), quote!(OmniQ))
}

fn expand(
    args: TokenStream,
    item: TokenStream,
    krate: TokenStream2,
    facade: TokenStream2,
) -> TokenStream {
    let function = syn::parse_macro_input!(item as ItemFn);
    match syn::parse::<Args>(args).and_then(|args| generate(&args, &function, &krate, &facade)) {
        Ok(tokens) => tokens.into(),
        // The function stays, so the one error is the only message (no cascade of unused
        // imports or missing items).
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#function #err).into()
        }
    }
}

/// The options a task attribute takes besides `name`: each is the `TaskOptions` builder
/// method of the same name.
const OPTIONS: &[&str] = &[
    "queue",
    "max_attempts",
    "priority",
    "timeout",
    "backoff",
    "ttl",
    "delay",
    "unique_key",
    "unique_for",
];

struct Args {
    name: Option<LitStr>,
    options: Vec<(syn::Ident, Expr)>,
    /// `local`: the future need not be `Send`; it runs on a local worker thread.
    local: Option<syn::Path>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
        let mut args = Args {
            name: None,
            options: Vec::new(),
            local: None,
        };
        for meta in metas {
            if let Meta::Path(path) = &meta
                && path.is_ident("local")
            {
                args.local = Some(path.clone());
                continue;
            }
            let Meta::NameValue(pair) = meta else {
                return Err(syn::Error::new_spanned(
                    meta,
                    "task options are `key = value`, e.g. `#[task(queue = \"images\")]`, \
                     or `local`",
                ));
            };
            let Some(key) = pair.path.get_ident().cloned() else {
                return Err(syn::Error::new_spanned(
                    pair.path,
                    "expected an option name",
                ));
            };
            if key == "name" {
                match pair.value {
                    Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(name),
                        ..
                    }) => args.name = Some(name),
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "a task's name is a string literal: `name = \"billing.invoice\"`",
                        ));
                    }
                }
            } else if OPTIONS.iter().any(|option| key == option) {
                args.options.push((key, pair.value));
            } else {
                return Err(syn::Error::new_spanned(
                    key,
                    format!(
                        "unknown task option; the options are `local`, `name`, `{}`",
                        OPTIONS.join("`, `")
                    ),
                ));
            }
        }
        Ok(args)
    }
}

fn generate(
    args: &Args,
    function: &ItemFn,
    krate: &TokenStream2,
    facade: &TokenStream2,
) -> syn::Result<TokenStream2> {
    let signature = &function.sig;
    if !signature.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &signature.generics,
            "a task cannot be generic: its type is stored and decoded by name",
        ));
    }
    if let Some(receiver) = signature.receiver() {
        return Err(syn::Error::new_spanned(
            receiver,
            "a task is a free function, not a method",
        ));
    }
    let output = task_output(&signature.output, &signature.ident)?;
    let mut fields = Vec::new();
    let mut field_names = Vec::new();
    let mut params = Vec::new();
    let mut call = Vec::new();
    // Arguments made from the context (`State<T>`), before the context is moved.
    let mut extracted = Vec::new();
    for input in &signature.inputs {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        if is_task_context(&typed.ty) {
            call.push(quote!(ctx));
            continue;
        }
        let Pat::Ident(ident) = typed.pat.as_ref() else {
            return Err(syn::Error::new_spanned(
                &typed.pat,
                "a task's arguments are plain names (`path: String`), not patterns",
            ));
        };
        let name = &ident.ident;
        let ty = &typed.ty;
        if is_state(ty) {
            extracted.push(quote! {
                let #name = <#ty as #krate::FromContext>::from_context(&ctx)?;
            });
        } else {
            fields.push(quote!(pub #name: #ty));
            params.push(quote!(#name: #ty));
            field_names.push(name.clone());
        }
        call.push(quote!(#name));
    }
    let fn_name = &signature.ident;
    let vis = &function.vis;
    let task_name = match &args.name {
        Some(name) => quote!(#name),
        None => quote!(::core::concat!(
            ::core::module_path!(),
            "::",
            ::core::stringify!(#fn_name)
        )),
    };
    let options = args
        .options
        .iter()
        .map(|(key, value)| quote!(.#key(#value)));
    let serde = quote!(#krate::__private::serde);
    let serde_path = LitStr::new(
        &format!("{krate}::__private::serde").replace(' ', ""),
        Span::call_site(),
    );
    let doc = format!(
        "The task [`{fn_name}`](fn@{fn_name}) runs: its fields are the function's arguments."
    );
    let is_async = signature.asyncness.is_some();
    if let Some(local) = &args.local
        && !is_async
    {
        return Err(syn::Error::new_spanned(
            local,
            "`local` is for an `async fn` whose future is not `Send`; a plain `fn` is a \
             blocking task and runs on a thread",
        ));
    }
    let async_run = quote! {
        async fn run(self, ctx: #krate::TaskContext)
            -> ::core::result::Result<#output, #krate::TaskError> {
            let Self { #(#field_names),* } = self;
            #(#extracted)*
            #fn_name(#(#call),*).await
        }
    };
    let (trait_name, run) = if args.local.is_some() {
        (quote!(#krate::LocalTask), async_run)
    } else if is_async {
        (quote!(#krate::Task), async_run)
    } else {
        (
            quote!(#krate::BlockingTask),
            quote! {
                fn run(self, ctx: #krate::TaskContext)
                    -> ::core::result::Result<#output, #krate::TaskError> {
                    let Self { #(#field_names),* } = self;
                    #(#extracted)*
                    #fn_name(#(#call),*)
                }
            },
        )
    };
    let enqueue_doc = format!(
        "Starts enqueueing [`{fn_name}`](fn@{fn_name}) with these arguments on `omniq`; set \
         options on the builder, then submit it."
    );
    Ok(quote! {
        #function

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(#serde::Serialize, #serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #vis struct #fn_name {
            #(#fields),*
        }

        impl #fn_name {
            #[doc = #enqueue_doc]
            #[allow(clippy::too_many_arguments, dead_code)]
            #vis fn enqueue(
                omniq: &#krate::#facade,
                #(#params),*
            ) -> #krate::EnqueueBuilder<#output> {
                omniq.enqueue(Self { #(#field_names),* })
            }
        }

        impl #trait_name for #fn_name {
            const NAME: &'static str = #task_name;
            type Output = #output;

            fn options() -> #krate::TaskOptions {
                #krate::TaskOptions::default() #(#options)*
            }

            #[allow(unused_variables)]
            #run
        }
    })
}

/// `T` of the function's `Result<T, TaskError>`.
fn task_output(output: &ReturnType, name: &syn::Ident) -> syn::Result<Type> {
    let refuse = |span: &dyn quote::ToTokens| {
        syn::Error::new_spanned(
            span,
            "a task returns `Result<T, TaskError>` (T is what the task's handle gives back)",
        )
    };
    let ReturnType::Type(_, ty) = output else {
        return Err(syn::Error::new_spanned(
            name,
            "a task returns `Result<T, TaskError>`; add the return type",
        ));
    };
    let Type::Path(path) = ty.as_ref() else {
        return Err(refuse(ty));
    };
    let Some(last) = path.path.segments.last() else {
        return Err(refuse(ty));
    };
    if last.ident != "Result" {
        return Err(refuse(ty));
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return Err(refuse(ty));
    };
    match generics.args.first() {
        Some(GenericArgument::Type(ok)) if generics.args.len() == 2 => Ok(ok.clone()),
        _ => Err(refuse(ty)),
    }
}

/// Whether an argument is the attempt's context (a type path ending in `TaskContext`).
fn is_task_context(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|s| s.ident == "TaskContext"))
}

/// Whether an argument is application state (a type path ending in `State<…>`), filled
/// from the context instead of the payload.
fn is_state(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|s| {
        s.ident == "State" && matches!(s.arguments, PathArguments::AngleBracketed(_))
    }))
}
